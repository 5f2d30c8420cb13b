"""Samples-to-identifiability: what data design buys over random sampling
(docs/ARCHITECTURE.md, "The learner").

`design_comparison` counts the traces the designed set (design.py) needs against those
random sampling needs until an *independent* domain sample — one the design never saw — is
covered; `random_traces_to_cover` finds the random count in one incremental pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from lat.learner.certificate import COVERAGE_TOL, sequence_residuals
from lat.learner.design import (
    CHECK_CHUNK,
    FeatureSpan,
    Part,
    design_words,
    token_runs,
    trace_features,
)
from lat.learner.solve import fit
from lat.runtime.device import single_thread
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel

Word = tuple[str, ...]

__all__ = ["DesignComparison", "coverage_residual", "design_comparison",
           "random_traces_to_cover"]


@single_thread()
def random_traces_to_cover(source: CompiledModel, domain_tokens: Sequence[np.ndarray],
                           stream: Sequence[Word], *, tol: float = COVERAGE_TOL
                           ) -> tuple[int | None, float]:
    """Length of the shortest prefix of `stream` whose training span covers every prefix of
    every domain sequence (relative residual ≤ tol), or None when the whole stream does
    not; and the largest domain residual left at that point.

    One pass: the stream is rolled out in growing chunks (stopping once covered), the span
    grows trace by trace, and the domain rows not yet covered are re-checked whenever a
    block they use grows. A chunk bringing feature columns never seen rebuilds the blocks
    (from the domain, the traces that grew the span so far, and the chunk)."""
    domain = trace_features(domain_tokens)
    lengths = [int(r.max()) + 1 if r.size else 0 for r, _, _ in domain]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_rows = int(offsets[-1])
    if not n_rows:
        return 0, 0.0
    rows = np.concatenate([r + offsets[i] for i, (r, _, _) in enumerate(domain)])
    cols = np.concatenate([c for _, c, _ in domain])
    vals = np.concatenate([v for _, _, v in domain])
    by_row = np.argsort(rows, kind="stable")
    row_bounds = np.searchsorted(rows[by_row], np.arange(n_rows + 1))
    pivots: list[Part] = []
    span = FeatureSpan(domain)
    open_rows = span.residuals(rows, cols, vals, n_rows) > tol  # all-zero rows are covered

    def entries_by_block() -> dict[int, np.ndarray]:
        block, _ = span.locate(cols)
        order = np.argsort(block, kind="stable")
        bounds = np.flatnonzero(np.r_[True, block[order][1:] != block[order][:-1], True])
        return {int(block[order[a]]): order[a:b]
                for a, b in zip(bounds[:-1], bounds[1:], strict=False)}

    def recheck(grown: set[int]) -> None:
        """Re-check the open domain rows that use a block that grew."""
        hit = [rows[e][open_rows[rows[e]]] for b in grown for e in (by_block.get(b),)
               if e is not None]
        targets = np.unique(np.concatenate(hit)) if hit else np.zeros(0, np.int64)
        if not targets.size:
            return
        counts = row_bounds[targets + 1] - row_bounds[targets]
        first = np.repeat(row_bounds[targets] - np.cumsum(counts) + counts, counts)
        entries = by_row[first + np.arange(int(counts.sum()))]
        local = np.repeat(np.arange(targets.size), counts)
        residual = span.residuals(local, cols[entries], vals[entries], targets.size)
        open_rows[targets] = residual > tol

    by_block = entries_by_block()
    position, size = 0, CHECK_CHUNK
    while position < len(stream) and open_rows.any():
        parts = trace_features(token_runs(source, stream[position : position + size]))
        fresh = [c for _, c, _ in parts if c.size]
        if fresh:
            fresh = np.unique(np.concatenate(fresh))
            at = np.minimum(np.searchsorted(span.support, fresh), span.support.size - 1)
            if span.support.size == 0 or np.any(span.support[at] != fresh):
                span = FeatureSpan(domain + pivots + parts)
                for part in pivots:
                    span.add(part, tol)
                by_block = entries_by_block()
        for start in range(0, len(parts), CHECK_CHUNK):
            chunk = range(start, min(start + CHECK_CHUNK, len(parts)))
            residual = span.sequence_residuals([parts[i] for i in chunk])
            for i, value in zip(chunk, residual, strict=True):
                if value <= tol:
                    continue
                grown = span.add(parts[i], tol)
                if not grown:
                    continue
                pivots.append(parts[i])
                recheck(grown)
                if not open_rows.any():
                    return (position + i + 1,
                            float(span.residuals(rows, cols, vals, n_rows).max()))
        position += len(parts)
        size = min(2 * size, 8192)
    residual = float(span.residuals(rows, cols, vals, n_rows).max())
    return (None if open_rows.any() else 0), residual


@dataclass(frozen=True)
class DesignComparison:
    """Traces needed to cover an independent domain sample: designed vs random."""

    designed_traces: int
    designed_covered: bool
    designed_residual: float
    random_traces: int | None  # None: random sampling did not cover within max_random
    random_residual: float
    random_checked: bool  # random_traces re-checked by a fit and the certificate's residual
    pool: int
    domain_sequences: int
    design: dict[str, object]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def coverage_residual(source: CompiledModel, words: Sequence[Word],
                      domain_tokens: Sequence[np.ndarray]) -> float:
    """The certificate's coverage residual of a fit to `words`' traces on the domain."""
    if not words:
        return float("inf")
    runs = rollout(source, list(words), dtype="fp64", record=True)
    pairs = [(np.asarray(r.tokens, np.float64), np.asarray(r.outputs, np.float64))
             for r in runs]
    if not sum(t.shape[0] for t, _ in pairs):
        return float("inf")
    fitted = fit(pairs, minimise=False)
    return float(sequence_residuals(fitted, list(domain_tokens)).max())


def design_comparison(
    source: CompiledModel,
    *,
    max_len: int = 16,
    pool: int = 2000,
    domain_samples: int = 500,
    max_random: int = 40000,
    seed: int = 0,
    check_random: bool = False,
) -> DesignComparison:
    """Samples-to-identifiability: designed selection vs random sampling.

    The designed set is `design_words` (lengths ≤ max_len, `pool` domain words per pool and
    check round). Random sampling draws words as `learn` does (length uniform, symbols
    uniform). Both are judged on the same independent domain sample of `domain_samples`
    words (a stream the design never saw): the designed set by a fit and the certificate's
    coverage residual (must be ≤ COVERAGE_TOL); random sampling by the shortest prefix of
    one random stream (≤ max_random words) whose span covers it, found in one incremental
    pass (`random_traces_to_cover`). `check_random` re-checks that count with two fits
    (covered at n, not at n − 1): the same test as the designed set's, slower.
    """
    from lat.learner.domain import domain_words, input_lengths
    from lat.learner.domain import sample_words_of_lengths as _sample

    interface = source.interface
    lengths = input_lengths(source, max_len)
    seconds: dict[str, float] = {}
    domain = domain_words(interface, domain_samples, lengths, np.random.default_rng([seed, 7]))
    domain_tokens = token_runs(source, domain)

    clock = time.perf_counter()
    design = design_words(source, lengths, pool=pool, seed=seed)
    seconds["design"] = time.perf_counter() - clock
    clock = time.perf_counter()
    designed_residual = coverage_residual(source, design.words, domain_tokens)
    seconds["design_check"] = time.perf_counter() - clock

    clock = time.perf_counter()
    stream = _sample(interface, max_random, lengths, np.random.default_rng([seed, 9]))
    random_traces, random_residual = random_traces_to_cover(source, domain_tokens, stream)
    seconds["random"] = time.perf_counter() - clock
    checked = False
    if check_random and random_traces is not None:
        clock = time.perf_counter()
        random_residual = coverage_residual(source, stream[:random_traces], domain_tokens)
        before = coverage_residual(source, stream[: random_traces - 1], domain_tokens)
        checked = random_residual <= COVERAGE_TOL < before
        seconds["random_check"] = time.perf_counter() - clock
    return DesignComparison(
        designed_traces=len(design.words),
        designed_covered=designed_residual <= COVERAGE_TOL,
        designed_residual=designed_residual,
        random_traces=random_traces,
        random_residual=random_residual,
        random_checked=checked,
        pool=design.candidates,
        domain_sequences=len(domain),
        design=design.summary(),
        seconds=seconds,
    )
