"""Count compression: a block's training rows replaced by at most |U| rows per current token,
with the same Gram XᵀX and the same XᵀY (docs/ARCHITECTURE.md, "The certificate").

Every program draws its tokens from a finite vocabulary U, so a prefix's reduced features
are f = M_c n: a fixed linear map M_c (given the current token c) of the prefix's count
vector n ∈ N^|U|. The rows X_g of one current token therefore lie in M_c's image of the
row space of their count matrix C_g: X_g = C_g M_cᵀ, so the columns of X_g lie in the
column space of C_g. With Q_g an orthonormal basis of that column space (a thin SVD of
C_g, |U| columns at most), Q_gᵀX_g has rank(C_g) ≤ |U| rows and

    (Q_gᵀX_g)ᵀ(Q_gᵀX_g) = X_gᵀ Q_g Q_gᵀ X_g = X_gᵀX_g,   (Q_gᵀX_g)ᵀ(Q_gᵀY_g) = X_gᵀY_g

for any outputs Y_g (Q_gQ_gᵀ fixes the columns of X_g). Least squares sees its data only
through XᵀX and XᵀY, so the regression, its eigenvalues and its span are unchanged (to
round-off); only the fitted values of the real rows need the real X. The cost falls from the
number of prefixes to Σ_c rank(C_c) rows per block. Chunks of one token's rows are
compressed one at a time (each chunk's own basis), which keeps the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHUNK_ROWS = 4096  # rows of one current token compressed at once
CHUNK_ENTRIES = 1 << 23  # count entries built at once (prefix lengths summed)
BATCH_ENTRIES = 1 << 22  # dense numbers of one chunk of a block's rows

__all__ = ["PrefixCounts", "compress_rows"]


class PrefixCounts:
    """Token ids of every position of every sequence, in the fit's global row order."""

    def __init__(self, sequences: Sequence[np.ndarray]) -> None:
        index: dict[bytes, int] = {}
        ids, starts, offset = [], [], 0
        for tokens in sequences:
            tokens = np.ascontiguousarray(tokens, dtype=np.float64)
            T = tokens.shape[0]
            if T:
                rows = tokens.view(np.dtype((np.void, tokens.dtype.itemsize * tokens.shape[1])))
                distinct, inverse = np.unique(rows.reshape(-1), return_inverse=True)
                local = np.array([index.setdefault(bytes(u), len(index)) for u in distinct],
                                 dtype=np.int64)
                ids.append(local[inverse.reshape(-1)])
            starts.append(np.full(T, offset, dtype=np.int64))
            offset += T
        self.ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.vocabulary = len(index)

    def counts(self, rows: np.ndarray) -> np.ndarray:
        """Dense count vectors (len(rows), u) of the prefixes ending at global `rows`, over
        the u tokens they use (columns in no particular order)."""
        lengths = rows - self.starts[rows] + 1
        owner = np.repeat(np.arange(rows.size), lengths)
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths,
                                                           lengths)
        tokens = self.ids[np.repeat(self.starts[rows], lengths) + within]
        used, local = np.unique(tokens, return_inverse=True)
        flat = np.bincount(owner * used.size + local.reshape(-1),
                           minlength=rows.size * used.size)
        return flat.reshape(rows.size, used.size).astype(np.float64)


def compress_rows(prefix_counts: PrefixCounts, sample_rows: np.ndarray,
                  local_row: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int,
                  Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Y') with ZᵀZ = XᵀX and ZᵀY' = XᵀY, Z dense with at most Σ_c rank(C_c) rows.

    X is one block: m = sample_rows.size rows (their global rows), entries (local_row, cols,
    vals) sorted by local row, n columns; Y (m, d_out) its outputs."""
    row_ptr = np.searchsorted(local_row, np.arange(sample_rows.size + 1))
    batch = max(1, min(CHUNK_ROWS, BATCH_ENTRIES // max(n, 1)))
    current = prefix_counts.ids[sample_rows]
    order = np.argsort(current, kind="stable")
    bounds = np.flatnonzero(np.r_[True, current[order][1:] != current[order][:-1], True])
    Z, Yc = [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        group = order[a:b]
        for first in range(0, group.size, batch):
            for part in _within_entries(prefix_counts, sample_rows, group[first: first + batch]):
                X = _dense_rows(row_ptr, cols, vals, part, n)
                z, y = _compressed(prefix_counts.counts(sample_rows[part]), X, Y[part])
                Z.append(z)
                Yc.append(y)
    if not Z:
        return np.zeros((0, n)), Y[:0]
    return np.concatenate(Z), np.concatenate(Yc)


def _dense_rows(row_ptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, rows: np.ndarray,
                n: int) -> np.ndarray:
    """Rows `rows` (local) of a block stored as entries sorted by row, as a dense array."""
    lengths = row_ptr[rows + 1] - row_ptr[rows]
    owner = np.repeat(np.arange(rows.size), lengths)
    entries = np.repeat(row_ptr[rows], lengths) + (
        np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    X = np.zeros((rows.size, n))
    X[owner, cols[entries]] = vals[entries]
    return X


def _within_entries(prefix_counts: PrefixCounts, sample_rows: np.ndarray,
                    chunk: np.ndarray) -> list[np.ndarray]:
    """`chunk` split so that each part's count entries stay within CHUNK_ENTRIES."""
    rows = sample_rows[chunk]
    lengths = rows - prefix_counts.starts[rows] + 1
    total = np.cumsum(lengths)
    cuts = np.searchsorted(total, np.arange(CHUNK_ENTRIES, int(total[-1]), CHUNK_ENTRIES))
    return [p for p in np.split(chunk, np.unique(np.maximum(cuts, 1))) if p.size]


def _compressed(C: np.ndarray, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q_gᵀX, Q_gᵀY for Q_g an orthonormal basis of the column space of C (or X, Y as they
    are when that saves nothing)."""
    k, u = C.shape
    if k <= u:
        return X, Y
    left, singular, _ = np.linalg.svd(C, full_matrices=False)
    # numerical rank of an integer matrix: drop only round-off-sized singular values
    keep = singular > singular[0] * max(k, u) * np.finfo(np.float64).eps * 8
    basis = left[:, keep]
    return basis.T @ X, basis.T @ Y
