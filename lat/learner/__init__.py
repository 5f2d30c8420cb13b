"""Relearn an artifact's weights from execution traces: Algorithm 1 plus a certificate.

`learn` is the one entry point (DESIGN §6):

    record   sample input words, roll the source model out in float64 (traces.py)
    fit      reduced cubic features of every prefix, block-wise min-norm least squares,
             heads by SVD of the coefficient matrix (features.py, solve.py, heads.py)
    certify  λ_min of Λ_D, coverage of the program's domain by the span of the training
             features, λ_min on that span (certificate.py)
    check    run learned and source models on the domain and compare every decoded output

The learned artifact is a plain runtime `CompiledModel` with the source's Interface and
float64 weights. This package imports the runtime only, never the compiler.

Domain (certificate and equivalence check): every word up to the largest length L whose
number of words of length ≤ L is at most domain_samples/2, plus `domain_samples` random
words of length ≤ domain_max_len. Only word lengths the model accepts are used
(`input_lengths` asks the runtime): a memory takes one key, a bounded machine at most its
tape.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product

import numpy as np
import torch

from lat.learner.certificate import COVERAGE_TOL, Certificate, certify, sequence_residuals
from lat.learner.solve import Fit, fit, minimal_heads
from lat.learner.traces import Traces, record_traces, sample_words
from lat.runtime.errors import InputError
from lat.runtime.execute import RunResult, rollout
from lat.runtime.interface import Interface
from lat.runtime.model import CompiledModel

Progress = Callable[[str, int, int], None]
CHUNK = 256  # inputs per rollout call between progress reports
MAX_MISMATCH_EXAMPLES = 8
# A design sample is this many times the certification sample: rare token co-occurrences
# must be found while designing, or the independent certification sample finds them first.
DESIGN_FACTOR = 4

__all__ = ["LearnResult", "Traces", "domain_words", "input_lengths", "learn"]


@dataclass(frozen=True)
class LearnResult:
    """What `learn` produced and how far it can be trusted."""

    model: CompiledModel
    samples: int  # regression pairs (prefix, output)
    traces: int  # rollouts the pairs came from
    train_max_abs_error: float
    heads: int
    certificate: Certificate
    equivalent: bool
    checked: int
    mismatches: list[tuple[str, ...]]
    seconds: dict[str, float]
    fit: Fit | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, object]:
        """The `lat learn --json` object (DESIGN §7): a JSON-serialisable dict."""
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
            },
            "equivalent": self.equivalent,
            "checked": self.checked,
            "traces": self.traces,
            "design_rounds": self.model.info.get("design_rounds", 0),
            "design": self.model.info.get("design"),
            "design_details": self.model.info.get("design_details"),
            "design_comparison": self.model.info.get("design_comparison"),
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def learn(
    source: CompiledModel | None = None,
    *,
    traces: Traces | None = None,
    samples: int = 1000,
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
) -> LearnResult:
    """Learn an MHLA from `source`'s rollouts (or from recorded `traces`) and certify it.

    With `source`: `samples` random words of length ≤ `max_len` are recorded (unless
    `traces` are given, which are then used instead), and the learned model is compared with
    `source` on the domain (rollouts in `dtype`, default fp32: every decoded field at every
    answer position, steps and stop reason). With `traces` only: the domain is built from
    the interface alphabet (lengths up to the longest recorded input), its token sequences
    come from the learned model's own rollouts, and equivalence means reproducing the
    recorded runs. Raises ValueError for a source with scale ≠ 1 or normalisation.

    Data design (with a source and no given traces): random words rarely reach every
    co-occurrence of a program's tokens, so after the first fit up to `design_rounds` rounds
    draw a *design* sample of domain words, keep those whose features the training span does
    not cover (the certificate's own test), record them too and refit. The certificate is
    then computed on a fresh domain sample drawn independently of every word trained on, so
    a covered domain is evidence, not an echo of the training set.

    `design="qr"` (with a source, no traces) replaces the `samples` random words by a
    designed set: from a pool of DESIGN_FACTOR·domain_samples domain words, the traces
    whose features span the pool's (design.py, pivoted greedy selection); the design
    rounds above still run after it.

    `compare_random` (with design="qr") also measures samples-to-identifiability for random
    sampling: how many words drawn as `samples` are drawn (an independent stream, at most
    `max_random`) are needed before their span covers the same certification domain
    (design.random_traces_to_cover). Reported as `design_comparison` beside the designed
    count; costs up to `max_random` extra rollouts.

    `workers` > 1 shards the regression over that many local processes (torch.distributed,
    gloo on 127.0.0.1; lat/learner/distributed.py); the fit equals the single-process one
    up to round-off.

    `minimise` (default on) searches the final fit for the fewest heads with the same
    outputs on every training prefix (minimise.py); `heads_before_minimising` in the
    report is Algorithm 1's count. Intermediate fits of the data design are not minimised.
    """
    if source is None and traces is None:
        raise ValueError("learn needs a source model or recorded traces")
    if source is not None:
        _check_supported(source)
        if traces is not None and traces.interface.to_json() != source.interface.to_json():
            raise ValueError("the traces were recorded with a different interface than source")
    interface = source.interface if source is not None else traces.interface
    rng = np.random.default_rng(seed)
    design_rng = np.random.default_rng([seed, 1])  # three independent streams:
    domain_rng = np.random.default_rng([seed, 2])  # training, design, certification
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    designing = traces is None and design_rounds > 0
    if design not in (None, "random", "qr"):
        raise ValueError(f"design must be 'qr' or None, not {design!r}")
    if compare_random and (design != "qr" or source is None or traces is not None):
        raise ValueError("compare_random compares a designed set (design='qr', with a "
                         "source and no given traces) with random sampling")
    method = design or "random"
    designed = None
    if traces is None and design == "qr":
        from lat.learner.design import design_words

        designed = design_words(source, input_lengths(source, domain_max_len or max_len),
                                pool=DESIGN_FACTOR * domain_samples, seed=seed)
        traces = _record(source, designed.words, progress)
    elif traces is None:
        words = _sample(interface, samples, input_lengths(source, max_len), rng)
        traces = _record(source, words, progress)
    seconds["record"] = time.perf_counter() - clock

    clock = time.perf_counter()
    fitted = _fit(traces, workers, progress)
    rounds = 0
    if designing:
        lengths = input_lengths(source, domain_max_len or max_len)
        while rounds < design_rounds:
            design = domain_words(interface, DESIGN_FACTOR * domain_samples, lengths,
                                  design_rng)
            runs = _rollouts(source, design, "fp64", True, progress, "design")
            residuals = sequence_residuals(fitted, [r.tokens for r in runs])
            uncovered = [w for w, r in zip(design, residuals, strict=True)
                         if r > COVERAGE_TOL]
            if not uncovered:
                break
            rounds += 1
            traces = _merge(traces, _record(source, uncovered, progress))
            fitted = _fit(traces, workers, progress)
    seconds["fit"] = time.perf_counter() - clock - fitted.seconds.get("train_check", 0.0)
    seconds["train_check"] = fitted.seconds.get("train_check", 0.0)
    if minimise:
        clock = time.perf_counter()
        fitted = minimal_heads(fitted, traces)
        seconds["minimise_heads"] = time.perf_counter() - clock
    model = CompiledModel(
        V=torch.from_numpy(fitted.V),
        Q=torch.from_numpy(fitted.Q),
        interface=interface,
        info={
            "origin": "learned",
            "learned_from": source.sha256() if source is not None else traces.source,
            "traces_sha256": traces.sha256(),
            "samples": fitted.samples,
            "traces": len(traces),
            "design_rounds": rounds,
            "design": method,
            **({"design_details": designed.summary()} if designed is not None else {}),
            "heads": fitted.heads,
        },
    )

    clock = time.perf_counter()
    if domain_max_len is None:
        domain_max_len = max_len if source is not None else max(
            (len(w) for w in traces.inputs), default=0
        )
    generator = source if source is not None else model
    domain = domain_words(interface, domain_samples, input_lengths(generator, domain_max_len),
                          domain_rng)
    domain_runs = _rollouts(generator, domain, "fp64", True, progress, "domain")
    certificate = certify(fitted, [r.tokens for r in domain_runs])
    if source is None:
        certificate = _with_note(
            certificate,
            "traces only: the domain's token sequences come from the learned model's own "
            "rollouts (no source model to generate them)",
        )
    seconds["certify"] = time.perf_counter() - clock

    if compare_random:
        from lat.learner.design import random_traces_to_cover

        clock = time.perf_counter()
        stream = _sample(interface, max_random, input_lengths(source, max_len),
                         np.random.default_rng([seed, 3]))
        random_traces, random_residual = random_traces_to_cover(
            source, [r.tokens for r in domain_runs], stream)
        seconds["compare_random"] = time.perf_counter() - clock
        model = model.with_info(design_comparison={
            "designed_traces": len(traces),
            "designed_covered": certificate.coverage_residual <= COVERAGE_TOL,
            "designed_residual": certificate.coverage_residual,
            "random_traces": random_traces,
            "random_covered": random_traces is not None,
            "random_residual": random_residual,
            "max_random": max_random,
            "domain_sequences": len(domain),
        })

    clock = time.perf_counter()
    if source is not None:
        expected = _rollouts(source, domain, dtype, False, progress, "check source")
        learned = _rollouts(model, domain, dtype, False, progress, "check")
        mismatches = [e.input for e, r in zip(expected, learned, strict=True)
                      if not _same_run(e, r)]
        checked = len(domain)
    else:
        learned = _rollouts(model, traces.inputs, dtype, False, progress, "check")
        mismatches = [traces.inputs[i] for i, run in enumerate(learned)
                      if not _matches_recorded(traces, i, run)]
        checked = len(traces.inputs)
    seconds["check"] = time.perf_counter() - clock

    equivalent = not mismatches
    margins = [run.margin for run in learned if math.isfinite(run.margin)]
    model = model.with_info(
        certificate=certificate.to_dict(),
        equivalent=equivalent,
        checked=checked,
        observed_margin=min(margins) if margins else None,
        margin_note=f"smallest decode margin seen over the {checked} checked inputs in "
        f"{dtype} (measured, not a proven bound)",
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
    )


def _fit(traces: Traces, workers: int, progress: Progress | None) -> Fit:
    """A fit without the fewest-heads search (learn runs it once, on the final fit)."""
    if workers > 1:
        from lat.learner.distributed import fit_workers

        return fit_workers(traces, workers, minimise=False)
    return fit(traces, progress=progress, minimise=False)


def _check_supported(model: CompiledModel) -> None:
    if model.scale != 1.0 or model.normalise:
        raise ValueError(
            f"learning supports scale 1 without normalisation; this model has scale "
            f"{model.scale} and normalise={model.normalise}"
        )


def input_lengths(model: CompiledModel, max_len: int) -> list[int]:
    """The word lengths 0..max_len that `model` accepts as input (its domain's lengths).

    Automata take any length; a memory takes one key; a bounded machine at most its tape.
    Rather than guess from the interface's labels, ask the runtime: a length is accepted
    when a word of that length rolls out without an InputError. Accepted lengths are taken
    to form an interval when both ends are accepted (two probes); otherwise every length is
    probed. Raises ValueError when no length up to max_len is accepted.
    """
    interface = model.interface
    if not interface.input_alphabet:
        return [0]
    symbol = interface.input_alphabet[0]

    def accepted(length: int) -> bool:
        try:
            rollout(model, [(symbol,) * length])
        except InputError:
            return False
        return True

    if accepted(0) and accepted(max_len):
        return list(range(max_len + 1))
    lengths = [n for n in range(max_len + 1) if accepted(n)]
    if not lengths:
        raise ValueError(f"the model accepts no input word of length 0..{max_len}")
    return lengths


def _sample(
    interface: Interface, count: int, lengths: Sequence[int], rng: np.random.Generator
) -> list[tuple[str, ...]]:
    """`count` random words with length uniform over `lengths`, symbols uniform."""
    if list(lengths) == list(range(max(lengths) + 1)):
        return sample_words(interface, count, max(lengths), rng)
    alphabet = interface.sampling_alphabet
    chosen = rng.choice(np.asarray(lengths), size=count)
    return [tuple(alphabet[i] for i in rng.integers(0, len(alphabet), n)) for n in chosen]


def domain_words(
    interface: Interface, count: int, lengths: Sequence[int], rng: np.random.Generator
) -> list[tuple[str, ...]]:
    """Every word of the allowed lengths, shortest first, while their cumulative count stays
    ≤ count/2; then `count` random words of the allowed lengths."""
    alphabet = interface.sampling_alphabet
    words: list[tuple[str, ...]] = []
    for length in sorted(lengths):
        here = len(alphabet) ** length
        if len(words) + here > count / 2:
            break
        words.extend(product(alphabet, repeat=length))
    return words + _sample(interface, count, lengths, rng)


def _record(source: CompiledModel, words: list[tuple[str, ...]],
            progress: Progress | None) -> Traces:
    """`record_traces` in chunks, reporting progress."""
    parts = []
    for start in range(0, len(words), CHUNK):
        parts.append(record_traces(source, words[start : start + CHUNK]))
        if progress is not None:
            progress("record", min(start + CHUNK, len(words)), len(words))
    return Traces(
        tokens=[t for p in parts for t in p.tokens],
        outputs=[o for p in parts for o in p.outputs],
        inputs=list(words),
        interface=source.interface,
        steps=[s for p in parts for s in (p.steps or [])],
        stopped_by=[s for p in parts for s in (p.stopped_by or [])],
        source=source.sha256(),
    )


def _merge(first: Traces, second: Traces) -> Traces:
    """Two recordings of the same source as one."""
    return Traces(
        tokens=[*first.tokens, *second.tokens],
        outputs=[*first.outputs, *second.outputs],
        inputs=[*first.inputs, *second.inputs],
        interface=first.interface,
        steps=[*(first.steps or []), *(second.steps or [])],
        stopped_by=[*(first.stopped_by or []), *(second.stopped_by or [])],
        source=first.source,
    )


def _rollouts(model: CompiledModel, words: Sequence[tuple[str, ...]], dtype: str, record: bool,
              progress: Progress | None, phase: str) -> list[RunResult]:
    out: list[RunResult] = []
    for start in range(0, len(words), CHUNK):
        out.extend(rollout(model, list(words[start : start + CHUNK]), dtype=dtype,
                           record=record))
        if progress is not None:
            progress(phase, min(start + CHUNK, len(words)), len(words))
    return out


def _same_run(expected: RunResult, learned: RunResult) -> bool:
    return (expected.decoded == learned.decoded and expected.steps == learned.steps
            and expected.stopped_by == learned.stopped_by)


def _matches_recorded(traces: Traces, index: int, run: RunResult) -> bool:
    """Does a learned run reproduce recorded run `index` (decoded outputs, steps, stop)?"""
    interface = traces.interface
    outputs = torch.from_numpy(np.asarray(traces.outputs[index], dtype=np.float64))
    first_answer = len(interface.prompt) - 1
    answers = outputs[first_answer:]
    for field_, offset in interface.output_slices():
        block = answers[:, offset : offset + field_.width]
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


def _with_note(certificate: Certificate, note: str) -> Certificate:
    from dataclasses import replace

    return replace(certificate, notes=f"{certificate.notes}; {note}")
