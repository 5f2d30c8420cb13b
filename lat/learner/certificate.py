"""The identifiability certificate (Yau et al., arXiv 2410.10101, docs/ARCHITECTURE.md, "The
certificate"), computed honestly.

Λ_D = (1/N) Σ_i H(Z_i) H(Z_i)ᵀ is the uncentred second moment of the reduced features of
the N training prefixes. The fit (solve.py) already holds it, block-diagonal over the
connected components of the support, with every block's eigen-decomposition.

- ``lambda_min_full``: the paper's λ_min(Λ_D) over the FULL reduced space (Lemma A.3).
  When the training data use fewer columns than d²(d+1)/2 it is exactly 0 (Λ_D has zero
  rows); when a block has an eigenvalue at or below the solver's cut-off it is 0 as well
  (numerically singular). One-hot programs always land here; the notes say why.
- ``coverage_residual``: max over every prefix of every domain sequence of
  ‖f − P f‖ / ‖f‖, P the orthogonal projection onto span{H(Z_i)} — per block the kept
  eigenvectors; a feature column outside the support counts fully as residual. Computed
  from the explicit difference f − P f (not from ‖f‖² − ‖Pf‖², which cannot resolve a
  residual below 1e-8 in float64).
- ``lambda_min_span``: the smallest eigenvalue of Λ_D kept in that span (> 0 by
  construction when anything was kept).

Why coverage is the claim that matters (the restricted form of Lemma A.3/E.1): every
output is ⟨p_a, H(Z)⟩. All minimisers of the training loss (over coefficients p, hence
over heads of any number when the data come from an MHLA) share the same projection of p
onto the span of the training features, because least squares has a unique solution
there. So on any input whose H(Z) lies in that span they produce the same outputs — the
data-generating model's, when the data are realisable.

``identifiable`` is therefore claimed only when all of these hold: at least one domain
prefix was checked; coverage_residual ≤ COVERAGE_TOL (1e-8, far above the ~1e-15 round-off
of a covered feature, far below any genuinely new direction); lambda_min_span > 0; and the
fit reproduces its training data (train error ≤ REALIZABLE_RTOL·max(1, max|y|)), without
which "agrees with the data-generating model" is not shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from lat.learner.compress import (
    COUNT_COVERED_RTOL,
    PrefixCounts,
    basis_times_rows,
    count_basis,
    dense_rows,
    row_groups,
)
from lat.learner.counts import Domain
from lat.learner.features import prefix_features
from lat.learner.solve import Fit, row_batches

COVERAGE_TOL = 1e-8
REALIZABLE_RTOL = 1e-6

__all__ = ["COVERAGE_TOL", "REALIZABLE_RTOL", "Certificate", "certify", "labelled", "outside",
           "span_residuals"]


@dataclass(frozen=True)
class Certificate:
    lambda_min_full: float
    coverage_residual: float
    lambda_min_span: float
    identifiable: bool
    features_total: int
    features_used: int
    domain_samples: int  # domain prefixes (feature vectors) checked
    notes: str
    domain_sequences: int = 0
    scope: str = "sampled"  # "exact": the domain sequences span every domain prefix
    domain: str = ""  # the domain in one sentence (domain.Domain.description)
    domain_dimension: int | None = None  # Σ_c dim L_c on an exact scope

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def certify(fit: Fit, domain_sequences: object) -> Certificate:
    """Certificate of `fit` on the domain: token sequences (T, d), or a Traces object."""
    if hasattr(domain_sequences, "tokens"):
        domain_sequences = domain_sequences.tokens
    sequences = [np.asarray(s, dtype=np.float64) for s in domain_sequences]
    for s in sequences:
        if s.ndim != 2 or s.shape[1] != fit.d:
            raise ValueError(f"domain sequence of shape {s.shape}; expected (T, {fit.d})")
    notes: list[str] = []

    lambda_full = _lambda_min_full(fit, notes)
    kept = [b.kept_eigenvalues for b in fit.blocks if b.rank]
    lambda_span = float(min(float(k.min()) for k in kept)) if kept else 0.0

    residual, prefixes, worst = _coverage(fit, sequences)
    if prefixes == 0:
        notes.append("no domain prefixes were checked: nothing is certified")
    elif residual > COVERAGE_TOL:
        sequence, position = worst
        notes.append(
            f"domain not covered: the features of domain sequence {sequence}, prefix "
            f"length {position + 1}, leave relative residual {residual:.3g} outside the span "
            f"of the training features (> {COVERAGE_TOL:g}); minimisers may disagree there"
        )
    else:
        notes.append(
            f"every one of the {prefixes} domain prefixes lies in the span of the training "
            f"features (max relative residual {residual:.3g} ≤ {COVERAGE_TOL:g})"
        )
    realizable = fit.train_max_abs_error <= REALIZABLE_RTOL * max(1.0, fit.output_scale)
    if not realizable:
        notes.append(
            f"training outputs are not reproduced (max abs error "
            f"{fit.train_max_abs_error:.3g}): the data are not shown to come from an MHLA, so "
            "agreement with the data-generating model is not claimed"
        )
    identifiable = bool(
        prefixes > 0 and residual <= COVERAGE_TOL and lambda_span > 0.0 and realizable
    )
    if identifiable:
        notes.append(
            "identifiable on the domain: every empirical-risk minimiser agrees with the "
            "data-generating model on every checked domain input"
        )
    return Certificate(
        lambda_min_full=lambda_full,
        coverage_residual=residual,
        lambda_min_span=lambda_span,
        identifiable=identifiable,
        features_total=fit.features_total,
        features_used=fit.features_used,
        domain_samples=prefixes,
        notes="; ".join(notes),
        domain_sequences=len(sequences),
    )


def _lambda_min_full(fit: Fit, notes: list[str]) -> float:
    if fit.features_used < fit.features_total:
        notes.append(
            f"lambda_min_full = 0: the training data use {fit.features_used} of the "
            f"{fit.features_total} reduced features, so Λ_D is singular on the full space "
            "(expected for one-hot programs; see coverage instead)"
        )
        return 0.0
    singular = [b for b in fit.blocks if b.rank < b.columns.size]
    if singular:
        notes.append(
            f"lambda_min_full = 0: {len(singular)} of {len(fit.blocks)} blocks of Λ_D have "
            "eigenvalues at or below the round-off cut-off (linearly dependent features)"
        )
        return 0.0
    return float(min(float(b.eigenvalues.min()) for b in fit.blocks))


def sequence_residuals(fit: Fit, sequences: Sequence[np.ndarray]) -> np.ndarray:
    """For each sequence, the largest relative residual of any of its prefixes' features
    outside the span of the training features (0 when every prefix is covered)."""
    lengths = [s.shape[0] for s in sequences]
    if not sum(lengths):
        return np.zeros(len(sequences))
    relative, offsets = _relative_residuals(fit, sequences)
    return np.array([relative[a:b].max() if b > a else 0.0
                     for a, b in zip(offsets[:-1], offsets[1:], strict=True)])


def _coverage(
    fit: Fit, sequences: Sequence[np.ndarray]
) -> tuple[float, int, tuple[int, int]]:
    """Max relative residual over all domain prefixes, their count, and the worst one."""
    lengths = [s.shape[0] for s in sequences]
    prefixes = int(sum(lengths))
    if prefixes == 0:
        return 0.0, 0, (0, 0)
    relative, offsets = _relative_residuals(fit, sequences)
    worst_row = int(np.argmax(relative))
    sequence = int(np.searchsorted(offsets, worst_row, side="right") - 1)
    worst = (sequence, worst_row - int(offsets[sequence]))
    value = float(relative[worst_row])
    return (value if math.isfinite(value) else math.inf), prefixes, worst


CHUNK_PREFIXES = 1 << 16  # domain prefixes whose features are held at once


def _relative_residuals(
    fit: Fit, sequences: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """‖f − P f‖ / ‖f‖ for every prefix of every sequence, and the sequences' row offsets.

    With the fit's count spans, a prefix whose count vector lies in L_c of its current
    token is covered in exact arithmetic, and its count-space residual (round-off) is
    reported; sequences holding any other prefix are computed from their features.
    Sequences go in groups of about CHUNK_PREFIXES prefixes: a context-placement domain
    (8,000 words × 71 prompt tokens) has ~10⁸ feature entries, which held at once cost
    gigabytes and most of `learn`'s time."""
    lengths = [s.shape[0] for s in sequences]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    relative = np.zeros(int(offsets[-1]), dtype=np.float64)
    if fit.count_spans is not None and offsets[-1]:
        # Prefixes whose count vector lies in L_c of their current token are covered
        # (compress.CountSpanIndex); only sequences with another prefix need features.
        counted = fit.count_spans.residuals(sequences)
        outside = np.r_[counted > COUNT_COVERED_RTOL, False].astype(np.int64)
        covered = np.add.reduceat(outside, offsets[:-1]) * (np.diff(offsets) > 0) == 0
        rest = [i for i in range(len(sequences)) if not covered[i]]
        for i in np.flatnonzero(covered).tolist():
            relative[offsets[i]: offsets[i + 1]] = counted[offsets[i]: offsets[i + 1]]
        if rest:
            exact, rest_offsets = _relative_residuals_of(fit, [sequences[i] for i in rest])
            for j, i in enumerate(rest):
                relative[offsets[i]: offsets[i + 1]] = exact[rest_offsets[j]: rest_offsets[j + 1]]
        return relative, offsets
    return _relative_residuals_of(fit, sequences)


def _relative_residuals_of(
    fit: Fit, sequences: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """`_relative_residuals` from every prefix's features."""
    lengths = [s.shape[0] for s in sequences]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    relative = np.zeros(int(offsets[-1]), dtype=np.float64)
    first = 0
    while first < len(sequences):
        last = first + 1
        while last < len(sequences) and offsets[last + 1] - offsets[first] <= CHUNK_PREFIXES:
            last += 1
        relative[offsets[first]: offsets[last]] = _chunk_residuals(fit, sequences[first:last])
        first = last
    return relative, offsets


def _chunk_residuals(fit: Fit, sequences: Sequence[np.ndarray]) -> np.ndarray:
    lengths = [s.shape[0] for s in sequences]
    prefixes = int(sum(lengths))
    parts = [prefix_features(s) for s in sequences]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = np.concatenate([r + offsets[i] for i, (r, _, _) in enumerate(parts)])
    cols = np.concatenate([c for _, c, _ in parts])
    vals = np.concatenate([v for _, _, v in parts])

    counts = PrefixCounts(sequences)  # count compression pays where tokens repeat
    return span_residuals(rows, cols, vals, prefixes, fit.support, fit.support_block,
                          fit.support_position, [info.basis for info in fit.blocks],
                          counts if counts.vocabulary * 4 <= prefixes else None)


def span_residuals(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int,
                   support: np.ndarray, block_of: np.ndarray, position_of: np.ndarray,
                   bases: Sequence[np.ndarray], prefix_counts: PrefixCounts | None = None
                   ) -> np.ndarray:
    """Relative residual ‖f − P f‖ / ‖f‖ of each sparse row f (COO entries) against a span
    kept per block: support column i lies in block `block_of[i]` at row `position_of[i]` of
    its orthonormal basis `bases[block]`; columns off the support count fully. 0 for an
    all-zero row. Shared by the certificate and the data design (design.py).

    With the rows' `prefix_counts` (rows numbered as its global rows) each block's rows of
    one current token are projected through the basis Q of their count matrix (compress.py):
    their part in the block is Q Z, so their residuals are Q (Z − Z U Uᵀ), computed from
    rank(C) ≤ |U| rows instead of every row."""
    norm2 = np.bincount(rows, weights=vals * vals, minlength=n_rows).astype(np.float64)
    position = np.minimum(np.searchsorted(support, cols), max(support.size - 1, 0))
    inside = (support[position] == cols) if support.size else np.zeros(cols.size, bool)
    residual2 = np.bincount(
        rows[~inside], weights=vals[~inside] ** 2, minlength=n_rows
    ).astype(np.float64)  # bincount of nothing is int64

    block = block_of[position[inside]]
    local = position_of[position[inside]]
    r_in, v_in = rows[inside], vals[inside]
    if r_in.size and bool(np.all(r_in[1:] >= r_in[:-1])):  # prefix_features' row order
        order = np.argsort(block, kind="stable")  # keeps rows sorted within each block
    else:
        order = np.lexsort((r_in, block))
    block, local, r_in, v_in = block[order], local[order], r_in[order], v_in[order]
    bounds = np.flatnonzero(np.r_[True, block[1:] != block[:-1], True]) if block.size else []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=False):
        basis = bases[int(block[start])]
        if basis.shape[1] == basis.shape[0]:
            continue  # the span is the whole block: nothing is left over
        if basis.shape[1] == 0:  # nothing spanned yet: the whole row part is left over
            residual2 += np.bincount(r_in[start:stop], weights=v_in[start:stop] ** 2,
                                     minlength=n_rows)
            continue
        residual2 += _block_residual2(basis, r_in[start:stop], local[start:stop],
                                      v_in[start:stop], n_rows, prefix_counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm2 > 0, np.sqrt(residual2) / np.sqrt(norm2), 0.0)


def _block_residual2(
    basis: np.ndarray, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int,
    prefix_counts: PrefixCounts | None = None,
) -> np.ndarray:
    """‖f_b − U Uᵀ f_b‖² per domain row for one block, from dense row batches (or from
    count-compressed rows, see `span_residuals`)."""
    out = np.zeros(n_rows, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    unique_rows = rows[starts]
    local_row = np.repeat(np.arange(unique_rows.size), np.diff(np.r_[starts, rows.size]))
    n = basis.shape[0]
    if prefix_counts is not None:
        row_ptr = np.searchsorted(local_row, np.arange(unique_rows.size + 1))
        for part in row_groups(prefix_counts, unique_rows, n):
            Q = count_basis(prefix_counts.counts(unique_rows[part]))
            if Q is None:
                R = outside(dense_rows(row_ptr, cols, vals, part, n), basis)
                out[unique_rows[part]] += np.einsum("ij,ij->i", R, R)
                continue
            R = outside(basis_times_rows(Q, row_ptr, cols, vals, part, n), basis)
            left, singular, _ = np.linalg.svd(R, full_matrices=False)
            T = Q @ (left * singular)  # ‖Q_i R‖ = ‖Q_i U S‖: R's right factor is orthonormal
            out[unique_rows[part]] += np.einsum("ij,ij->i", T, T)
        return out
    for first, F in row_batches(local_row, cols, vals, unique_rows.size, basis.shape[0]):
        R = outside(F, basis)
        out[unique_rows[first : first + F.shape[0]]] += np.einsum("ij,ij->i", R, R)
    return out


def outside(F: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """F − (F U) Uᵀ, in torch: these products are small and many, and on a shared machine
    numpy's multi-threaded BLAS spends more time waiting for its threads than multiplying
    (the data design runs them under `single_thread`)."""
    f, u = torch.from_numpy(F), torch.from_numpy(basis)
    return (f - (f @ u) @ u.T).numpy()


def labelled(certificate: Certificate, domain: Domain) -> Certificate:
    """`certificate` with its scope, domain sentence and the domain's notes."""
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
