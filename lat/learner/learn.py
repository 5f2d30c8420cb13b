"""`learn`: relearn an artifact's weights from traces and say how far they can be trusted.

It reads as its phases (docs/ARCHITECTURE.md, "The learner"):

    domain    what the certificate will speak about: exact where the program allows
              (domain.py), a labelled sample otherwise
    record    the training words, rolled out through the source in float64 (traces.py)
    fit       Algorithm 1: reduced cubic features, block least squares, SVD heads, with
              data design where the training span misses the domain (solve.py, design.py)
    minimise  the fewest heads with the same training outputs (minimise.py)
    certify   coverage of the domain by the training span (certificate.py)
    check     equivalence with the source: proven on an exact domain (equivalence.py), with
              both models run side by side on sampled inputs as a cross-check

The learned artifact is a plain runtime `CompiledModel` with the source's Interface and
float64 weights, carrying its certificate. This module imports the runtime only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from lat.learner.certificate import COVERAGE_TOL, Certificate, certify, sequence_residuals
from lat.learner.domain import (
    EXACT_BUDGET,
    Domain,
    build_domain,
    domain_words,
    input_lengths,
    sample_words_of_lengths,
)
from lat.learner.equivalence import Equivalence, prove_equivalence
from lat.learner.solve import Fit, fit, minimal_heads
from lat.learner.traces import Traces, merge_traces, record_traces, rollouts
from lat.runtime.errors import InputError
from lat.runtime.execute import RunResult
from lat.runtime.model import CompiledModel

Progress = Callable[[str, int, int], None]
Word = tuple[str, ...]
CHUNK = 256  # inputs per rollout call between progress reports
MAX_MISMATCH_EXAMPLES = 8
DEFAULT_SAMPLES = 1000  # random training words where no exact design exists
# A design sample is this many times the certification sample: rare token co-occurrences
# must be found while designing, or the independent certification sample finds them first.
DESIGN_FACTOR = 4

__all__ = ["LearnResult", "learn"]


@dataclass(frozen=True)
class LearnResult:
    """What `learn` produced and how far it can be trusted."""

    model: CompiledModel
    samples: int  # regression pairs (prefix, output)
    traces: int  # rollouts the pairs came from
    train_max_abs_error: float
    heads: int
    certificate: Certificate
    equivalent: bool | None  # None: no source to compare with (traces only)
    checked: int
    mismatches: list[Word]
    seconds: dict[str, float]
    fit: Fit | None = field(default=None, repr=False, compare=False)
    equivalence: Equivalence | None = None
    reproduces_traces: bool | None = None  # traces only: the recorded runs are reproduced
    design: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The `lat learn --json` object: a JSON-serialisable dict."""
        c = self.certificate
        return {
            "samples": self.samples,
            "train_max_abs_error": self.train_max_abs_error,
            "heads": self.heads,
            "heads_before_minimising": (self.fit.heads_before_minimising
                                        if self.fit is not None else None),
            "certificate": {
                "lambda_min_full": c.lambda_min_full,
                "coverage_residual": c.coverage_residual,
                "lambda_min_span": c.lambda_min_span,
                "identifiable": c.identifiable,
                "features_total": c.features_total,
                "features_used": c.features_used,
                "domain_samples": c.domain_samples,
                "scope": c.scope,
                "domain": c.domain,
                "domain_dimension": c.domain_dimension,
                "notes": c.notes,
            },
            "equivalent": self.equivalent,
            "equivalence": self.equivalence.to_dict() if self.equivalence else None,
            "reproduces_traces": self.reproduces_traces,
            "checked": self.checked,
            "traces": self.traces,
            "design_details": None,
            "design_comparison": None,
            **self.design,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


def learn(
    source: CompiledModel | None = None,
    *,
    traces: Traces | None = None,
    samples: int | None = None,
    max_len: int = 64,
    domain_samples: int = 2000,
    domain_max_len: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    dtype: str = "fp32",
    design_rounds: int = 8,
    workers: int = 1,
    design: str | None = None,
    compare_random: bool = False,
    max_random: int = 50000,
    minimise: bool = True,
    exact: bool = True,
    exact_budget: int = EXACT_BUDGET,
    max_traces: int | None = None,
) -> LearnResult:
    """Learn an MHLA from `source`'s rollouts (or from recorded `traces`) and certify it.

    Domain. With a source, `build_domain` finds the exact domain where it can (every word
    of every length for automata, every input for memories and bounded machines within
    `exact_budget` inputs); otherwise a sample of `domain_samples` words of length ≤
    `domain_max_len` (default `max_len`), named as such in the certificate.

    Training words: the given `traces`; else on an exact domain its spanning design words
    (plus `samples` random words when asked for); else `samples` (default 1000) random words
    of length ≤ `max_len`, or a designed set with `design="qr"`. Then data design: on an
    exact domain one round adds the certification words the training span misses; on a
    sampled one up to `design_rounds` rounds add the uncovered words of fresh design samples
    (`design_converged` says whether the last round found none). `max_traces` caps the
    training set (the report says when the cap stopped the design).

    Equivalence: on an exact domain proven (equivalence.py) and cross-checked by running
    both models on the certification words and `domain_samples` random words; on a sampled
    domain only checked; from traces alone `equivalent` is None and `reproduces_traces`
    says whether the recorded runs come out again (the certificate then speaks only of the
    recorded inputs, and `domain_max_len` beyond them is refused).

    `workers` > 1 shards the regression over local processes (distributed.py); `minimise`
    (default on) searches the final fit for the fewest heads (minimise.py). Raises
    ValueError for a source with scale ≠ 1 or normalisation.
    """
    if source is None and traces is None:
        raise ValueError("learn needs a source model or recorded traces")
    if source is not None:
        _check_supported(source)
        if traces is not None and traces.interface.to_json() != source.interface.to_json():
            raise InputError("the traces were recorded with a different interface than source")
    if design not in (None, "random", "qr"):
        raise ValueError(f"design must be 'qr' or None, not {design!r}")
    if compare_random and (design != "qr" or source is None or traces is not None):
        raise ValueError("compare_random compares a designed set (design='qr', with a "
                         "source and no given traces) with random sampling")
    seconds: dict[str, float] = {}
    report: dict[str, object] = {}

    # -- domain -------------------------------------------------------------------------
    clock = time.perf_counter()
    if source is not None:
        domain = build_domain(source, max_len=domain_max_len or max_len,
                              samples=domain_samples, seed=seed, exact=exact,
                              budget=exact_budget, design_length=max_len, progress=progress)
    else:
        domain = _recorded_domain(traces, domain_max_len)
    seconds["domain_analysis"] = time.perf_counter() - clock

    # -- record ---------------------------------------------------------------------------
    clock = time.perf_counter()
    method, designed, capped = "given", None, False
    if traces is None:
        if design == "qr":
            from lat.learner.design import design_words

            method = "qr"
            designed = design_words(source, input_lengths(source, domain_max_len or max_len),
                                    pool=DESIGN_FACTOR * domain_samples, seed=seed)
            words = designed.words
        elif domain.scope == "exact" and samples is None:
            method = "exact"
            words = list(domain.design_words)
        else:
            method = "random"
            words = sample_words_of_lengths(
                source.interface, DEFAULT_SAMPLES if samples is None else samples,
                input_lengths(source, max_len), np.random.default_rng(seed))
        words, capped = _cap(list(words), 0, max_traces)
        traces = _record(source, words, progress)
    seconds["record"] = time.perf_counter() - clock

    # -- fit, with data design -------------------------------------------------------------
    clock = time.perf_counter()
    fitted = _fit(traces, workers, progress)
    rounds = 0
    converged: bool | None = None  # None: no sampled design rounds ran
    certify_runs: list[RunResult] | None = None
    if source is not None and method != "given":
        if domain.scope == "exact":
            words = domain.certify_words
            runs = certify_runs = rollouts(source, words, progress=progress, phase="design")
            residuals = sequence_residuals(fitted, [r.tokens for r in runs])
            uncovered = [w for w, r in zip(words, residuals, strict=True) if r > COVERAGE_TOL]
            if uncovered and design_rounds > 0:
                uncovered, cut = _cap(uncovered, len(traces), max_traces)
                capped |= cut
                if uncovered:
                    rounds = 1
                    traces = merge_traces(traces, _record(source, uncovered, progress))
                    fitted = _fit(traces, workers, progress)
        elif design_rounds > 0:
            converged = False
            design_rng = np.random.default_rng([seed, 1])
            lengths = input_lengths(source, domain_max_len or max_len)
            while rounds < design_rounds:
                sample = domain_words(source.interface, DESIGN_FACTOR * domain_samples,
                                      lengths, design_rng)
                runs = rollouts(source, sample, progress=progress, phase="design")
                residuals = sequence_residuals(fitted, [r.tokens for r in runs])
                uncovered = [w for w, r in zip(sample, residuals, strict=True)
                             if r > COVERAGE_TOL]
                if not uncovered:
                    converged = True
                    break
                uncovered, cut = _cap(uncovered, len(traces), max_traces)
                capped |= cut
                if not uncovered:
                    break
                rounds += 1
                traces = merge_traces(traces, _record(source, uncovered, progress))
                fitted = _fit(traces, workers, progress)
    seconds["fit"] = time.perf_counter() - clock - fitted.seconds.get("train_check", 0.0)
    seconds["train_check"] = fitted.seconds.get("train_check", 0.0)
    report.update(design_rounds=rounds, design=method, design_converged=converged,
                  max_traces_reached=capped)
    if designed is not None:
        report["design_details"] = designed.summary()

    # -- minimise --------------------------------------------------------------------------
    if minimise:
        clock = time.perf_counter()
        fitted = minimal_heads(fitted, traces)
        seconds["minimise_heads"] = time.perf_counter() - clock
    model = CompiledModel(
        V=torch.from_numpy(fitted.V),
        Q=torch.from_numpy(fitted.Q),
        interface=traces.interface,
        info={
            "origin": "learned",
            "learned_from": source.sha256() if source is not None else traces.source,
            "traces_sha256": traces.sha256(),
            "samples": fitted.samples,
            "traces": len(traces),
            "design_rounds": rounds,
            "design": method,
            "heads": fitted.heads,
        },
    )

    # -- certify ---------------------------------------------------------------------------
    clock = time.perf_counter()
    if source is not None:
        if certify_runs is None:  # the exact design round rolled these out already
            certify_runs = rollouts(source, domain.certify_words, progress=progress,
                                    phase="domain")
        elif progress is not None:
            progress("domain", len(certify_runs), len(certify_runs))
        sequences = [r.tokens for r in certify_runs]
    else:
        sequences = traces.tokens
        if progress is not None:
            progress("domain", len(sequences), len(sequences))
    certificate = _labelled(certify(fitted, sequences), domain)
    seconds["certify"] = time.perf_counter() - clock

    if compare_random:
        from lat.learner.design import random_traces_to_cover

        clock = time.perf_counter()
        stream = sample_words_of_lengths(source.interface, max_random,
                                         input_lengths(source, max_len),
                                         np.random.default_rng([seed, 3]))
        random_traces, random_residual = random_traces_to_cover(source, sequences, stream)
        seconds["compare_random"] = time.perf_counter() - clock
        report["design_comparison"] = {
            "designed_traces": len(traces),
            "designed_covered": certificate.coverage_residual <= COVERAGE_TOL,
            "designed_residual": certificate.coverage_residual,
            "random_traces": random_traces,
            "random_covered": random_traces is not None,
            "random_residual": random_residual,
            "max_random": max_random,
            "domain_sequences": len(sequences),
        }

    # -- check -----------------------------------------------------------------------------
    clock = time.perf_counter()
    equivalence, reproduces = None, None
    if source is not None:
        words = _cross_check_words(source, domain, domain_samples, domain_max_len or max_len,
                                   seed)
        checking = {"dtype": dtype, "record": False, "progress": progress}
        expected = rollouts(source, words, phase="check source", **checking)
        learned = rollouts(model, words, phase="check", **checking)
        mismatches = [e.input for e, r in zip(expected, learned, strict=True)
                      if not _same_run(e, r)]
        checked = len(words)
        if domain.scope == "exact" and domain.spans is not None:
            equivalence = prove_equivalence(source, model, domain.spans, checked=checked,
                                            mismatches=len(mismatches))
        else:
            equivalence = Equivalence(
                "checked", False, None, None, checked, len(mismatches),
                f"{len(mismatches)} of {checked} sampled inputs decode differently"
                if mismatches else f"all {checked} sampled inputs decode alike (not a proof)")
        equivalent: bool | None = not mismatches
    else:
        learned = rollouts(model, traces.inputs, dtype=dtype, record=False, progress=progress,
                           phase="check")
        mismatches = [traces.inputs[i] for i, run in enumerate(learned)
                      if not _matches_recorded(traces, i, run)]
        checked = len(traces.inputs)
        reproduces = not mismatches
        equivalent = None
        equivalence = Equivalence(
            "recorded", False, None, None, checked, len(mismatches),
            "no source program: only the recorded runs were compared "
            f"({checked - len(mismatches)} of {checked} reproduced)")
    seconds["check"] = time.perf_counter() - clock

    margins = [run.margin for run in learned if math.isfinite(run.margin)]
    model = model.with_info(
        certificate=certificate.to_dict(),
        equivalence=equivalence.to_dict(),
        equivalent=equivalent,
        checked=checked,
        certified=_certified_domain(domain, certificate, equivalence),
        observed_margin=min(margins) if margins else None,
        margin_note=f"smallest decode margin seen over the {checked} checked inputs in "
        f"{dtype} (measured, not a proven bound)",
        **{k: v for k, v in report.items() if k in ("design_converged", "design_details",
                                                     "design_comparison")},
    )
    return LearnResult(
        model=model,
        samples=fitted.samples,
        traces=len(traces),
        train_max_abs_error=fitted.train_max_abs_error,
        heads=fitted.heads,
        certificate=certificate,
        equivalent=equivalent,
        checked=checked,
        mismatches=mismatches[:MAX_MISMATCH_EXAMPLES],
        seconds=seconds,
        fit=fitted,
        equivalence=equivalence,
        reproduces_traces=reproduces,
        design=report,
    )


def _certified_domain(domain: Domain, certificate: Certificate,
                      equivalence: Equivalence) -> dict[str, object]:
    """What a run of the learned artifact may rely on (read by `lat run`)."""
    proven = equivalence.proven and certificate.identifiable and domain.scope == "exact"
    return {
        "proven": proven,
        "scope": domain.scope,
        "domain": domain.description,
        "up_to_length": equivalence.up_to_length if proven else None,
        "max_input_length": domain.max_length,
        "reason": None if proven else (
            "the learned model was only compared with its source on sampled inputs"
            if domain.scope == "sampled" else
            "no source program: only the recorded runs were compared"
            if domain.scope == "recorded" else
            "the training data do not cover the domain" if not certificate.identifiable
            else "equivalence with the source is not proven"),
    }


def _labelled(certificate: Certificate, domain: Domain) -> Certificate:
    notes = [certificate.notes, *domain.notes]
    if domain.scope == "exact":
        notes.append(f"scope exact: the {certificate.domain_sequences} certification words' "
                     f"prefixes span every prefix of the domain ({domain.description}); "
                     "coverage there is coverage everywhere in it")
    elif domain.scope == "sampled":
        notes.append(f"scope sampled: {domain.description}")
    else:
        notes.append(f"traces only: {domain.description}")
    return replace(certificate, notes="; ".join(n for n in notes if n), scope=domain.scope,
                   domain=domain.description, domain_dimension=domain.dimension)


def _recorded_domain(traces: Traces, domain_max_len: int | None) -> Domain:
    longest = max((len(w) for w in traces.inputs), default=0)
    if domain_max_len is not None and domain_max_len > longest:
        raise InputError(
            f"the traces hold inputs of at most {longest} symbols; a domain up to "
            f"{domain_max_len} cannot be certified from them (give the program that made "
            "them, or record longer inputs)")
    return Domain(scope="recorded",
                  description=f"the {len(traces):,} recorded inputs only (length ≤ {longest}); "
                  "no source program defines a domain beyond them",
                  certify_words=list(traces.inputs), max_length=longest)


def _cross_check_words(source: CompiledModel, domain: Domain, count: int, max_len: int,
                       seed: int) -> list[Word]:
    """Certification words plus random words: both models are run on these."""
    if domain.scope == "sampled":
        return domain.certify_words
    lengths = input_lengths(source, min(max_len, domain.max_length or max_len))
    extra = sample_words_of_lengths(source.interface, count, lengths,
                                    np.random.default_rng([seed, 6]))
    return [*domain.certify_words, *extra]


def _cap(words: list[Word], have: int, max_traces: int | None) -> tuple[list[Word], bool]:
    if max_traces is None or have + len(words) <= max_traces:
        return words, False
    return words[: max(0, max_traces - have)], True


def _fit(traces: Traces, workers: int, progress: Progress | None) -> Fit:
    """A fit without the fewest-heads search (learn runs it once, on the final fit)."""
    if workers > 1:
        from lat.learner.distributed import fit_workers

        return fit_workers(traces, workers, minimise=False)
    return fit(traces, progress=progress, minimise=False)


def _check_supported(model: CompiledModel) -> None:
    if model.scale != 1.0 or model.normalise:
        raise InputError(f"learning supports scale 1 without normalisation; this model has "
                         f"scale {model.scale} and normalise={model.normalise}")


def _record(source: CompiledModel, words: Sequence[Word],
            progress: Progress | None) -> Traces:
    """`record_traces` in chunks, reporting progress."""
    parts = []
    for start in range(0, len(words), CHUNK):
        parts.append(record_traces(source, words[start: start + CHUNK]))
        if progress is not None:
            progress("record", min(start + CHUNK, len(words)), len(words))
    return Traces(
        tokens=[t for p in parts for t in p.tokens],
        outputs=[o for p in parts for o in p.outputs],
        inputs=[tuple(w) for w in words],
        interface=source.interface,
        steps=[s for p in parts for s in (p.steps or [])],
        stopped_by=[s for p in parts for s in (p.stopped_by or [])],
        source=source.sha256(),
    )


def _same_run(expected: RunResult, learned: RunResult) -> bool:
    return (expected.decoded == learned.decoded and expected.steps == learned.steps
            and expected.stopped_by == learned.stopped_by)


def _matches_recorded(traces: Traces, index: int, run: RunResult) -> bool:
    """Does a learned run reproduce recorded run `index` (decoded outputs, steps, stop)?"""
    interface = traces.interface
    outputs = torch.from_numpy(np.asarray(traces.outputs[index], dtype=np.float64))
    answers = outputs[len(interface.prompt) - 1:]
    for field_, offset in interface.output_slices():
        block = answers[:, offset: offset + field_.width]
        if block.shape[0] == 0:
            recorded: tuple[str, ...] = ()
        else:
            top = torch.topk(block, k=min(2, field_.width), dim=1)  # as the runtime decodes
            recorded = tuple(field_.values[i] for i in top.indices[:, 0].tolist())
        if run.decoded.get(field_.name) != recorded:
            return False
    if traces.steps is not None and traces.steps[index] != run.steps:
        return False
    return traces.stopped_by is None or traces.stopped_by[index] == run.stopped_by
