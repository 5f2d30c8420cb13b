"""Data design from the certificate: few traces whose features span the program's domain.

The certificate (certificate.py) claims identifiability on the inputs whose reduced
features lie in the span of the training features. So a good training set is a small set
of input words whose prefix features span everything the domain produces. Given a
candidate pool of words (the domain's own generator: every short word plus random ones),
`spanning_selection` picks such a set greedily, in the manner of a column-pivoted QR at
the granularity of whole traces:

- the pool's feature columns are split into the connected blocks of the fit (features.py;
  every prefix lies in exactly one block), and an orthonormal basis of the span selected
  so far is kept per block;
- candidates are visited longest first (a long trace carries many prefixes, i.e. many
  candidate directions — the norm-ordered pivoting of a QR); a candidate is selected only
  when some prefix leaves a relative residual > `tol` (COVERAGE_TOL, the certificate's own
  threshold) outside the current span, and its new directions are added to the basis;
- a candidate already covered costs one projection and is skipped.

Every pool word is then covered by the selection, by construction. `design_comparison`
measures what that buys: traces needed by the designed set vs by random sampling (words
drawn as `learn` draws them) until an independent domain sample is covered.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from lat.learner.certificate import COVERAGE_TOL, sequence_residuals
from lat.learner.features import column_labels, prefix_features
from lat.learner.solve import fit
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel

__all__ = ["DesignComparison", "design_comparison", "design_words", "spanning_selection"]


def spanning_selection(sequences: Sequence[np.ndarray], *, tol: float = COVERAGE_TOL
                       ) -> list[int]:
    """Indices of a subset of `sequences` (tokens (T, d)) whose prefix features span the
    features of every prefix of every sequence (relative residual ≤ tol); in visit order."""
    parts = [prefix_features(np.asarray(s, np.float64)) for s in sequences]
    all_cols = np.concatenate([c for _, c, _ in parts]) if parts else np.zeros(0, np.int64)
    if all_cols.size == 0:
        return []
    lengths = [s.shape[0] for s in sequences]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    all_rows = np.concatenate([r + offsets[i] for i, (r, _, _) in enumerate(parts)])
    support, local = np.unique(all_cols, return_inverse=True)
    labels = column_labels(all_rows, local, support.size)
    n_blocks = int(labels.max()) + 1
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_blocks + 1))
    position = np.empty(support.size, dtype=np.int64)
    position[order] = np.arange(support.size) - np.repeat(bounds[:-1], np.diff(bounds))
    sizes = np.diff(bounds)
    bases = [np.zeros((int(n), 0)) for n in sizes]

    visit = sorted(range(len(sequences)), key=lambda i: (-lengths[i], i))
    chosen: list[int] = []
    for i in visit:
        rows, cols, vals = parts[i]
        if rows.size == 0:
            continue
        at = np.searchsorted(support, cols)
        block, where = labels[at], position[at]
        new_rows: dict[int, np.ndarray] = {}
        for b in np.unique(block).tolist():
            if bases[b].shape[1] == sizes[b]:
                continue  # the block is spanned already
            pick = block == b
            r = rows[pick]
            unique_rows, r_local = np.unique(r, return_inverse=True)
            F = np.zeros((unique_rows.size, int(sizes[b])))
            F[r_local, where[pick]] = vals[pick]
            R = F - (F @ bases[b]) @ bases[b].T
            norms = np.linalg.norm(F, axis=1)
            if np.any(np.linalg.norm(R, axis=1) > tol * np.maximum(norms, 1e-300)):
                new_rows[b] = (R, float(norms.max()))
        if not new_rows:
            continue
        chosen.append(i)
        for b, (R, scale) in new_rows.items():
            _, s, vt = np.linalg.svd(R, full_matrices=False)
            add = vt[s > tol * scale].T
            add -= bases[b] @ (bases[b].T @ add)  # re-orthogonalise against the basis
            add, _ = np.linalg.qr(add)
            bases[b] = np.concatenate([bases[b], add], axis=1)[:, : int(sizes[b])]
    return chosen


def design_words(source: CompiledModel, pool: Sequence[tuple[str, ...]]
                 ) -> list[tuple[str, ...]]:
    """The words of `pool` that `spanning_selection` picks for `source`'s rollouts."""
    runs = rollout(source, list(pool), dtype="fp64", record=True)
    chosen = spanning_selection([np.asarray(r.tokens, np.float64) for r in runs])
    return [tuple(pool[i]) for i in chosen]


@dataclass(frozen=True)
class DesignComparison:
    """Traces needed to cover an independent domain sample: designed vs random."""

    designed_traces: int
    designed_covered: bool
    designed_residual: float
    random_traces: int | None  # None: random sampling did not cover within max_random
    random_residual: float
    pool: int
    domain_sequences: int
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def design_comparison(
    source: CompiledModel,
    *,
    max_len: int = 16,
    pool: int = 2000,
    domain_samples: int = 500,
    max_random: int = 5000,
    seed: int = 0,
) -> DesignComparison:
    """Samples-to-identifiability: designed (pivoted) selection vs random sampling.

    The designed set is `spanning_selection` over a pool of `pool` domain words
    (`learn`'s domain generator, lengths ≤ max_len). Random sampling draws words as
    `learn` does (length uniform, symbols uniform). Both are judged the same way: fit, then
    the largest relative residual over an independent domain sample of `domain_samples`
    words (a third random stream) must be ≤ COVERAGE_TOL. The random count is the smallest
    prefix length of one random word stream that covers, found by doubling then bisection
    (coverage only grows as words are added), capped at `max_random`.
    """
    from lat.learner import _sample, domain_words, input_lengths

    interface = source.interface
    lengths = input_lengths(source, max_len)
    seconds: dict[str, float] = {}
    domain = domain_words(interface, domain_samples, lengths, np.random.default_rng([seed, 7]))
    domain_tokens = [np.asarray(r.tokens, np.float64)
                     for r in rollout(source, domain, dtype="fp64", record=True)]

    def residual(words: Sequence[tuple[str, ...]]) -> float:
        if not words:
            return float("inf")
        runs = rollout(source, list(words), dtype="fp64", record=True)
        pairs = [(np.asarray(r.tokens, np.float64), np.asarray(r.outputs, np.float64))
                 for r in runs]
        if not sum(t.shape[0] for t, _ in pairs):
            return float("inf")
        fitted = fit(pairs, minimise=False)
        return float(sequence_residuals(fitted, domain_tokens).max())

    clock = time.perf_counter()
    candidates = domain_words(interface, pool, lengths, np.random.default_rng([seed, 8]))
    designed = design_words(source, candidates)
    designed_residual = residual(designed)
    seconds["design"] = time.perf_counter() - clock

    clock = time.perf_counter()
    stream = _sample(interface, max_random, lengths, np.random.default_rng([seed, 9]))
    lo, hi = 0, max(1, len(designed))
    hi_residual = residual(stream[:hi])
    while hi_residual > COVERAGE_TOL and hi < max_random:
        lo, hi = hi, min(2 * hi, max_random)
        hi_residual = residual(stream[:hi])
    random_traces: int | None = hi if hi_residual <= COVERAGE_TOL else None
    if random_traces is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            value = residual(stream[:mid])
            if value <= COVERAGE_TOL:
                hi, hi_residual = mid, value
            else:
                lo = mid
        random_traces = hi
    seconds["random"] = time.perf_counter() - clock
    return DesignComparison(
        designed_traces=len(designed),
        designed_covered=designed_residual <= COVERAGE_TOL,
        designed_residual=designed_residual,
        random_traces=random_traces,
        random_residual=hi_residual,
        pool=len(candidates),
        domain_sequences=len(domain),
        seconds=seconds,
    )
