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
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from lat.learner.budget import (
    Budget,
    BudgetUp,
    MemoryUp,
    OverBudget,
    afford_check,
    estimate_words,
    machine_budget,
)
from lat.learner.certificate import (
    COVERAGE_TOL,
    Certificate,
    certify,
    labelled,
    sequence_residuals,
)
from lat.learner.check import check_with_source, check_with_traces, not_checked
from lat.learner.compress import COUNT_SPAN_MAX_VOCABULARY
from lat.learner.counts import CountCover
from lat.learner.design import opening_words, uncovered_words
from lat.learner.domain import (
    EXACT_BUDGET,
    Domain,
    build_domain,
    domain_words,
    input_lengths,
    recorded_domain,
    sample_words_of_lengths,
)
from lat.learner.equivalence import Equivalence
from lat.learner.gauge import coordinate_groups
from lat.learner.solve import BlockTooLarge, Fit, fit, minimal_heads, with_heads
from lat.learner.traces import Traces, merge_traces, record_in_chunks, rollouts
from lat.runtime.errors import InputError
from lat.runtime.execute import RunResult
from lat.runtime.model import CompiledModel

Progress = Callable[[str, int, int], None]
Word = tuple[str, ...]
MAX_MISMATCH_EXAMPLES = 8
DEFAULT_SAMPLES = 1000  # random training words where no exact design exists
# A design sample is this many times the certification sample: rare token co-occurrences
# must be found while designing, or the independent certification sample finds them first.
DESIGN_FACTOR = 4

__all__ = ["LearnResult", "LearnStopped", "OverBudget", "learn"]


class LearnStopped(Exception):
    """A time or memory budget ended `learn` before any fit: there is no model.
    `report` says what was reached (the JSON `lat learn` prints)."""

    def __init__(self, message: str, report: dict[str, object]) -> None:
        super().__init__(message)
        self.report = report


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
            "head_search": _head_search(self.fit, self.model),
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
    time_budget: float | None = None,
    memory_budget: int | None = None,
    notify: Callable[[str], None] | None = None,
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
    sampled one up to `design_rounds` rounds add the words of fresh design samples that
    open the training count spans (design.opening_words; past COUNT_SPAN_MAX_VOCABULARY
    tokens, the words a refit's span misses), with one fit after the rounds
    (`design_converged` says whether the last round found none). `max_traces` caps the
    training set (the report says when the cap stopped the design). A fit refused as too
    large to solve densely (BlockTooLarge) during the design leaves the last one standing.
    Fits lay out no heads; the head search (or Algorithm 1's recovery, `with_heads`)
    does, once.

    Budgets (budget.py). Before the first fit the fit's size is estimated from a pilot of
    the training words and passed to `notify` (one line); over `memory_budget` bytes it is
    refused (`OverBudget`), and the design may add traces only while the estimate stays
    within it. `time_budget` seconds: the exact domain analysis may use half of it (then
    the domain is a labelled sample), the design rounds half of it, the head search half of
    what is left; past the deadline the run keeps its last finished fit and skips the rest
    (`stopped`, `stopped_in`, `skipped` in the report; no certificate or check it had no
    time for, so no verdict).
    Without `memory_budget` the budget is the memory the machine has when the run starts
    (`budget.machine_budget`; `memory_budget` in the report says which). Head recovery,
    the head search and the check reserve their estimated peak first; over
    the memory budget recovery does not start, the search tries fewer head counts or is
    skipped (Algorithm 1's heads kept; `memory_notes`), the check is skipped. A budget that
    ends the run before any fit (no model) raises `LearnStopped`.

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
    machine = memory_budget is None  # the machine's own limit, not the user's
    if machine:
        memory_budget = machine_budget()
    budget = Budget(time_budget, memory_budget)
    guarded = budget.guard(progress)
    seconds: dict[str, float] = {}
    report: dict[str, object] = {"stopped": None, "stopped_in": None, "skipped": []}

    def stop(up: BudgetUp, *skipped: str) -> None:  # the first budget to end a phase
        report.update(stopped=report["stopped"] or up.reason, skipped=[*report["skipped"],
                      *skipped], stopped_in=report["stopped_in"] or up.phase)

    def stopped_before_fit(up: BudgetUp, traces_done: int) -> LearnStopped:
        stop(up, "fit", "minimise", "certify", "check")
        return LearnStopped(str(up), {**report, "traces": traces_done, "design_rounds": 0,
                                      "equivalent": None, "certificate": None,
                                      "seconds": {k: round(v, 4) for k, v in seconds.items()}})

    # -- domain -------------------------------------------------------------------------
    clock = time.perf_counter()
    if source is not None:
        options = {"max_len": domain_max_len or max_len, "samples": domain_samples,
                   "seed": seed, "budget": exact_budget, "design_length": max_len}
        try:
            domain = build_domain(source, exact=exact, progress=budget.guard(progress, 0.5),
                                  **options)
        except BudgetUp as up:  # the exact analysis had half the time: a labelled sample
            domain = build_domain(source, exact=False, progress=progress, **options,
                                  not_exact=f"exact analysis stopped: {up}")
    else:
        domain = recorded_domain(traces, domain_max_len)
    seconds["domain_analysis"] = time.perf_counter() - clock

    # -- record, with the estimate ------------------------------------------------------------
    clock = time.perf_counter()
    method, designed, capped = "given", None, False
    words: list[Word] = []
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
    estimate = estimate_words(source, traces, words)
    report["estimate"] = estimate.to_dict()
    if notify is not None:
        notify(f"estimate: {estimate.describe()}")
    report["memory_budget"] = {"bytes": memory_budget, "from": (
        "available memory" if machine else "given")} if memory_budget else None
    if memory_budget is not None and estimate.bytes > memory_budget:
        raise OverBudget(estimate, memory_budget, machine)
    if traces is None:
        try:
            traces = record_in_chunks(source, words, guarded)
        except BudgetUp as up:
            raise stopped_before_fit(up, 0) from None
    report["traces_recorded"] = len(traces)
    cover = None  # the training count spans, where the design rounds use them
    if source is not None and method == "random" and domain.scope != "exact" \
            and design_rounds > 0:
        cover, opened = _count_cover(traces)
        if cover is not None and len(opened) < len(traces):  # the rest add nothing
            traces = traces.select(opened)
    seconds["record"] = time.perf_counter() - clock

    # -- fit, with data design -------------------------------------------------------------
    clock = time.perf_counter()
    try:
        fitted = _fit(traces, workers, guarded, budget)
    except BudgetUp as up:
        raise stopped_before_fit(up, len(traces)) from None
    rounds = 0
    converged: bool | None = None  # None: no sampled design rounds ran
    certify_runs: list[RunResult] | None = None
    memory_caps: list[int] = []  # traces each refit may have beside the fit held meanwhile

    def cap() -> int | None:
        if memory_budget is not None:
            memory_caps.append(estimate.affordable_now(memory_budget, fitted.V.nbytes
                                                       + fitted.Q.nbytes))
        return min((c for c in (max_traces, *memory_caps[-1:]) if c is not None), default=None)

    design_progress = budget.guard(progress, 0.5)
    if source is not None and method != "given":
        try:
            if domain.scope == "exact":
                words = domain.certify_words
                runs = certify_runs = rollouts(source, words, progress=design_progress,
                                               phase="design")
                residuals = sequence_residuals(fitted, [r.tokens for r in runs])
                uncovered = [w for w, r in zip(words, residuals, strict=True)
                             if r > COVERAGE_TOL]
                if uncovered and design_rounds > 0:
                    uncovered, cut = _cap(uncovered, len(traces), cap())
                    capped |= cut
                    if uncovered:
                        more = merge_traces(traces, record_in_chunks(source, uncovered,
                                                                     design_progress))
                        fitted, traces = _fit(more, workers, design_progress, budget), more
                        rounds = 1
            elif design_rounds > 0:
                converged = False
                design_rng = np.random.default_rng([seed, 1])
                lengths = input_lengths(source, domain_max_len or max_len)
                while rounds < design_rounds:
                    sample = domain_words(source.interface, DESIGN_FACTOR * domain_samples,
                                          lengths, design_rng)
                    uncovered = (opening_words(source, cover, sample, design_progress)
                                 if cover is not None else None)
                    if uncovered is None:  # no cover, or the vocabulary outgrew it
                        cover = None
                        fitted = _fit(traces, workers, design_progress, budget)
                        uncovered = uncovered_words(source, fitted, sample, design_progress)
                    if not uncovered:
                        converged = True
                        break
                    uncovered, cut = _cap(uncovered, len(traces), cap())
                    capped |= cut
                    if uncovered:
                        traces = merge_traces(traces, record_in_chunks(source, uncovered,
                                                                       design_progress))
                        rounds += 1
                    if cover is None and uncovered:
                        fitted = _fit(traces, workers, design_progress, budget)
                    if cut:  # the cover holds words not trained on: no further round
                        break
        except BudgetUp as up:  # keep the last finished fit
            certify_runs = None
            stop(up, "design")
        except BlockTooLarge as error:  # a refit past the dense limit: the last fit stands
            certify_runs = None
            budget.notes.append(f"design: {error}; the fit of {fitted.sequences:,} traces "
                                "stands")
        if fitted.sequences != len(traces):  # count design: one fit, after its rounds
            try:
                fitted = _fit(traces, workers, guarded, budget)
            except BudgetUp as up:  # the first fit stands, with the traces it saw
                stop(up, "design")
            except BlockTooLarge as error:
                budget.notes.append(f"design: {error}; the first fit, of "
                                    f"{fitted.sequences:,} traces, stands")
            traces = traces.first(fitted.sequences)
    if capped and memory_caps and (max_traces is None or memory_caps[-1] < max_traces):
        report.update(stopped="memory budget", stopped_in="design")
    seconds["fit"] = time.perf_counter() - clock - fitted.seconds.get("train_check", 0.0)
    seconds["train_check"] = fitted.seconds.get("train_check", 0.0)
    report.update(design_rounds=rounds, design=method, design_converged=converged,
                  max_traces_reached=capped, memory_notes=budget.notes)
    if designed is not None:
        report["design_details"] = designed.summary()

    # -- minimise --------------------------------------------------------------------------
    skipped_by: BudgetUp | None = None
    if minimise:
        try:  # out of time or memory already: Algorithm 1's heads
            budget.check("minimise")
            budget.afford("minimise", estimate.bytes_per_trace * len(traces), "the features")
            clock = time.perf_counter()
            with budget.in_force():
                fitted = minimal_heads(fitted, traces, seconds=budget.left(0.5),
                                       groups=coordinate_groups(traces.interface))
            seconds["minimise_heads"] = time.perf_counter() - clock
        except BudgetUp as up:
            if up.phase == "heads":  # Algorithm 1's heads do not fit: nothing cheaper
                raise stopped_before_fit(up, len(traces)) from None
            stop(up, "minimise")
            skipped_by = up if isinstance(up, MemoryUp) else None  # the cheaper path
    if fitted.heads == 0:  # fitted without heads and the search did not run: Algorithm 1's
        try:
            with budget.in_force():
                fitted = with_heads(fitted, traces)
        except MemoryUp as up:
            raise stopped_before_fit(up, len(traces)) from None
    if skipped_by is not None:
        budget.notes.append(f"minimise skipped ({skipped_by}): Algorithm 1's {fitted.heads} "
                            "heads kept")
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
    sequences: list[np.ndarray] = []
    try:
        budget.check("certify")
        if source is not None:
            if certify_runs is None:  # the exact design round rolled these out already
                certify_runs = rollouts(source, domain.certify_words, progress=guarded,
                                        phase="domain")
            elif progress is not None:
                progress("domain", len(certify_runs), len(certify_runs))
            sequences = [r.tokens for r in certify_runs]
        else:
            sequences = traces.tokens
            if progress is not None:
                progress("domain", len(sequences), len(sequences))
        certificate = labelled(certify(fitted, sequences), domain)
    except BudgetUp as up:
        stop(up, "certify")
        certificate = labelled(replace(certify(fitted, []), notes=f"not computed: {up}"),
                                domain)
    seconds["certify"] = time.perf_counter() - clock

    if compare_random:
        from lat.learner.design_comparison import random_traces_to_cover

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
    try:
        budget.check("check")
        afford_check(budget, fitted.V, fitted.Q, 32 if time_budget else 256)
        if source is not None:
            checked = check_with_source(source, model, domain, count=domain_samples,
                                        max_len=domain_max_len or max_len, seed=seed,
                                        dtype=dtype, progress=guarded,
                                        chunk=32 if time_budget else 256)  # prompt stops
        else:
            checked = check_with_traces(model, traces, dtype=dtype, progress=guarded)
    except BudgetUp as up:
        stop(up, "check")
        checked = not_checked(str(up))
    seconds["check"] = time.perf_counter() - clock

    margins = [run.margin for run in checked.learned_runs if math.isfinite(run.margin)]
    model = model.with_info(
        certificate=certificate.to_dict(),
        equivalence=checked.equivalence.to_dict(),
        equivalent=checked.equivalent,
        checked=checked.checked,
        certified=_certified_domain(domain, certificate, checked.equivalence,
                                    report["stopped"]),
        observed_margin=min(margins) if margins else None,
        margin_note=f"smallest decode margin seen over the {checked.checked} checked inputs "
        f"in {dtype} (measured, not a proven bound)",
        **{k: v for k, v in report.items() if k in ("design_converged", "design_details",
                                                     "design_comparison", "stopped")},
    )
    return LearnResult(
        model=model,
        samples=fitted.samples,
        traces=len(traces),
        train_max_abs_error=fitted.train_max_abs_error,
        heads=fitted.heads,
        certificate=certificate,
        equivalent=checked.equivalent,
        checked=checked.checked,
        mismatches=checked.mismatches[:MAX_MISMATCH_EXAMPLES],
        seconds=seconds,
        fit=fitted,
        equivalence=checked.equivalence,
        reproduces_traces=checked.reproduces_traces,
        design=report,
    )


def _certified_domain(domain: Domain, certificate: Certificate, equivalence: Equivalence,
                      stopped: object = None) -> dict[str, object]:
    """What a run of the learned artifact may rely on (read by `lat run`)."""
    proven = equivalence.proven and certificate.identifiable and domain.scope == "exact"
    return {
        "proven": proven,
        "scope": domain.scope,
        "domain": domain.description,
        "up_to_length": equivalence.up_to_length if proven else None,
        "max_input_length": domain.max_length,
        "reason": None if proven else (
            f"the {stopped} ended the run before the certificate and check were complete"
            if stopped and equivalence.method == "not checked" else
            "the learned model was only compared with its source on sampled inputs"
            if domain.scope == "sampled" else
            "no source program: only the recorded runs were compared"
            if domain.scope == "recorded" else
            "the training data do not cover the domain" if not certificate.identifiable
            else "equivalence with the source is not proven"),
    }


def _head_search(fitted: Fit | None, model: CompiledModel) -> dict[str, object] | None:
    """The fewest-heads search's record as JSON: the gauge's field pattern in the
    Interface's field names, and whether its deadline cut it short (`complete`)."""
    if fitted is None or not fitted.head_search:
        return None
    search = dict(fitted.head_search)
    names = [f.name for f in model.interface.token_fields]
    for key in ("gauge", "alternating"):
        if search.get(key):
            part = dict(search[key])
            part["seconds"] = round(float(part["seconds"]), 3)
            if part.get("pattern") is not None:
                part["pattern"] = part["pattern"].describe(names)
            search[key] = part
    return search


def _count_cover(traces: Traces) -> tuple[CountCover | None, list[int]]:
    """The training traces' count spans, for design in count space (design.opening_words),
    and which traces opened them (the others' features lie in the span of those before
    them: training on them adds nothing). None where the vocabulary is too large for
    count spans (the design then uses the fit)."""
    cover = CountCover(COUNT_SPAN_MAX_VOCABULARY)
    opened = []
    for i, tokens in enumerate(traces.tokens):
        if cover.add(tokens):
            opened.append(i)
        if cover.full:
            return None, list(range(len(traces)))
    return cover, opened


def _cap(words: list[Word], have: int, max_traces: int | None) -> tuple[list[Word], bool]:
    if max_traces is None or have + len(words) <= max_traces:
        return words, False
    return words[: max(0, max_traces - have)], True


def _fit(traces: Traces, workers: int, progress: Progress | None, budget: Budget) -> Fit:
    """A fit without heads (the design refits; the head search or `with_heads` lays out the
    final fit's once) and without the fewest-heads search (learn runs it once, on the
    final fit). The sharded fit recovers Algorithm 1's heads as it goes."""
    if workers > 1:
        from lat.learner.distributed import fit_workers

        return fit_workers(traces, workers, minimise=False)
    with budget.in_force():
        return fit(traces, progress=progress, minimise=False, heads=False)


def _check_supported(model: CompiledModel) -> None:
    if model.scale != 1.0 or model.normalise:
        raise InputError(f"learning supports scale 1 without normalisation; this model has "
                         f"scale {model.scale} and normalise={model.normalise}")
