"""Reduced cubic features of MHLA prefixes, sparse, plus the connectivity of a sparse pattern.

The output of one MHLA layer at position t is linear in the cubic features
S_t[j,k] · z_t[l] with S_t = Σ_{s≤t} z_s z_sᵀ (docs/ARCHITECTURE.md, "The model"). S_t is
symmetric, so the features
(j,k,l) and (k,j,l) coincide and only j ≤ k is kept (Yau et al., arXiv 2410.10101, "reduced
features"):
F = d²(d+1)/2 columns.

Column order (used everywhere in the learner, and by saved coefficients):

    pair_index(j, k) = j·d − j(j−1)/2 + (k − j)     for j ≤ k (row-major upper triangle)
    column(j, k, l)  = pair_index(j, k) · d + l

so the columns of one pair {j,k} are contiguous, ordered by the current-token coordinate l.
Unlike the paper's Alg. 2 (off-diagonal pairs first, then squares) the squares S[j,j] sit
inside the triangle; the set of features is the same, only the order differs.

One-hot programs make these features very sparse: S_t only has entries for pairs of
coordinates that co-occurred in one earlier token, and z_t has a handful of nonzeros. The
sparse routine below never forms a d×d or F-wide row: it tracks only the pairs that occur
in the sequence and multiplies their running sums by the nonzeros of the current token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CHUNK_ENTRIES = 1 << 22  # largest dense (positions × pairs) buffer, in numbers

__all__ = [
    "CHUNK_ENTRIES",
    "Coefficients",
    "block_layout",
    "column_labels",
    "dense_features",
    "feature_index",
    "feature_triples",
    "n_features",
    "oriented_entries",
    "pair_index",
    "prefix_features",
    "sequence_pairs",
    "stack_features",
]


def n_features(d: int) -> int:
    """Number of reduced features for token width d: d²(d+1)/2."""
    return d * d * (d + 1) // 2


def pair_index(j: np.ndarray | int, k: np.ndarray | int, d: int) -> np.ndarray | int:
    """Index of the unordered pair {j, k} (any order) in the row-major upper triangle."""
    lo = np.minimum(j, k)
    hi = np.maximum(j, k)
    return lo * d - (lo * (lo - 1)) // 2 + (hi - lo)


def feature_index(j: np.ndarray | int, k: np.ndarray | int, l: np.ndarray | int, d: int):
    """Reduced column of S[j,k]·z[l] (j, k in any order)."""
    return pair_index(j, k, d) * d + l


def feature_triples(d: int, columns: np.ndarray | None = None) -> np.ndarray:
    """(j, k, l) with j ≤ k for every column (or for the given columns), as an (n, 3) array."""
    upper_j, upper_k = np.triu_indices(d)  # row-major: exactly the pair_index order
    if columns is None:
        columns = np.arange(n_features(d))
    columns = np.asarray(columns, dtype=np.int64)
    pair, l = np.divmod(columns, d)
    return np.stack([upper_j[pair], upper_k[pair], l], axis=1)


def oriented_entries(d: int, columns: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two orders of every reduced column's pair: (row, m, qk, ql) per entry, where
    column i = (j, k, l) holds V[:, m]·Q[qk, ql] for (m, qk) = (j, k) and, when j ≠ k,
    (k, j) — the first n entries one per column, then the off-diagonal columns' second."""
    j, k, l = feature_triples(d, columns).T
    off = np.flatnonzero(j != k)
    return np.r_[np.arange(j.size), off], np.r_[j, k[off]], np.r_[k, j[off]], np.r_[l, l[off]]


def prefix_features(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse reduced features of every prefix z_1..z_t of one sequence, t = 1..T.

    Returns COO triplets (rows, cols, vals): row t−1 holds the features of the prefix ending
    at position t; only nonzero S_t[j,k] (j ≤ k) times nonzero z_t[l] appear. Entries of S_t
    that cancel to exactly 0.0 (e.g. +1 and −1 deltas) are dropped. Works for dense
    (Gaussian) tokens too, where it produces all d²(d+1)/2 columns per row.

    Cost: O(T · P) for the running sums, P = number of distinct pairs that occur in the
    sequence, plus the output size.
    """
    Z = np.asarray(tokens, dtype=np.float64)
    if Z.ndim != 2:
        raise ValueError(f"tokens must be (T, d), got shape {Z.shape}")
    T, d = Z.shape
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if T == 0:
        return empty
    token_t, token_l = np.nonzero(Z)  # row-major: sorted by t, then coordinate
    if token_t.size == 0:
        return empty
    token_v = Z[token_t, token_l]
    per_token = np.bincount(token_t, minlength=T)
    token_start = np.concatenate([[0], np.cumsum(per_token)[:-1]])

    # Every (j ≤ k) pair of nonzeros within each token: its contribution z_s[j] z_s[k].
    pair_counts = per_token * (per_token + 1) // 2
    total_pairs = int(pair_counts.sum())
    owner = np.repeat(np.arange(T), pair_counts)
    rank = np.arange(total_pairs) - np.repeat(np.cumsum(pair_counts) - pair_counts, pair_counts)
    n_here = per_token[owner]
    # Decode rank → (a, b), a ≤ b, within the token's nonzero list (upper triangle order).
    a, b = _triangle_decode(rank, n_here)
    first = token_start[owner] + a
    second = token_start[owner] + b
    pair_ids = pair_index(token_l[first], token_l[second], d)
    contribution = token_v[first] * token_v[second]

    distinct, local = np.unique(pair_ids, return_inverse=True)
    # Running sums S_t over the distinct pairs, in chunks of positions so that the dense
    # (positions × pairs) buffer stays below CHUNK_ENTRIES numbers on long sequences.
    step = max(1, CHUNK_ENTRIES // max(distinct.size, 1))
    carry = np.zeros(distinct.size, dtype=np.float64)
    pieces = []
    for first in range(0, T, step):
        last = min(first + step, T)
        lo, hi = np.searchsorted(owner, [first, last])
        running = np.zeros((last - first, distinct.size), dtype=np.float64)
        running[owner[lo:hi] - first, local[lo:hi]] = contribution[lo:hi]  # one per pair
        running[0] += carry
        np.cumsum(running, axis=0, out=running)  # running[t, p] = S_{first+t+1}[pair p]
        carry = running[-1].copy()
        pieces.append(_times_current_token(running, first, distinct, d, per_token,
                                           token_start, token_l, token_v))
    rows, cols, vals = (np.concatenate(parts) for parts in zip(*pieces, strict=True))
    return rows, cols, vals


def _times_current_token(
    running: np.ndarray,
    first: int,
    distinct: np.ndarray,
    d: int,
    per_token: np.ndarray,
    token_start: np.ndarray,
    token_l: np.ndarray,
    token_v: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every nonzero S_t[pair] of a chunk times every nonzero z_t[l] of the same position."""
    s_t, s_p = np.nonzero(running)  # sorted by position
    position = s_t + first
    repeat = per_token[position]
    out_t = np.repeat(s_t, repeat)
    out_p = np.repeat(s_p, repeat)
    within = np.arange(out_t.size) - np.repeat(np.cumsum(repeat) - repeat, repeat)
    z_at = token_start[out_t + first] + within
    rows = (out_t + first).astype(np.int64)
    cols = (distinct[out_p] * d + token_l[z_at]).astype(np.int64)
    vals = running[out_t, out_p] * token_v[z_at]
    return rows, cols, vals


def _triangle_decode(rank: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert the row-major upper-triangle numbering of an n×n triangle, elementwise.

    Row a starts at a·n − a(a−1)/2; the small loop runs over a ≤ max(n) (a token's nonzeros).
    """
    a = np.zeros_like(rank)
    top = int(n.max()) if n.size else 0
    for candidate in range(1, top):
        start = candidate * n - (candidate * (candidate - 1)) // 2
        a = np.where((candidate < n) & (rank >= start), candidate, a)
    b = rank - (a * n - (a * (a - 1)) // 2) + a
    return a, b


def dense_features(tokens: np.ndarray) -> np.ndarray:
    """The obvious reference: (T, F) features, S_t accumulated and read entry by entry."""
    Z = np.asarray(tokens, dtype=np.float64)
    T, d = Z.shape
    out = np.zeros((T, n_features(d)), dtype=np.float64)
    S = np.zeros((d, d), dtype=np.float64)
    for t in range(T):
        S += np.outer(Z[t], Z[t])
        for j in range(d):
            for k in range(j, d):
                for l in range(d):
                    out[t, feature_index(j, k, l, d)] = S[j, k] * Z[t, l]
    return out


@dataclass(frozen=True)
class Coefficients:
    """Regression coefficients on the reduced features, stored on their support only.

    `columns` (n,) are reduced-feature columns (sorted, unique); `values` (n, d_out) the
    coefficient of each column for every output coordinate. Columns absent have coefficient 0.
    """

    d: int
    d_out: int
    columns: np.ndarray
    values: np.ndarray

    def dense(self) -> np.ndarray:
        """(F, d_out) array (only for small d: F = d²(d+1)/2 rows)."""
        out = np.zeros((n_features(self.d), self.d_out), dtype=np.float64)
        out[self.columns] = self.values
        return out

    @staticmethod
    def from_dense(array: np.ndarray, d: int) -> Coefficients:
        array = np.asarray(array, dtype=np.float64)
        if array.shape[0] != n_features(d):
            raise ValueError(f"expected {n_features(d)} rows of coefficients, got {array.shape}")
        columns = np.flatnonzero(np.any(array != 0.0, axis=1))
        return Coefficients(d, array.shape[1], columns, array[columns])

    def predict(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int):
        """Outputs (n_rows, d_out) of sparse feature rows; columns off the support give 0."""
        position = np.searchsorted(self.columns, cols)
        position = np.minimum(position, max(self.columns.size - 1, 0))
        hit = self.columns.size > 0
        known = (self.columns[position] == cols) if hit else np.zeros(cols.shape, bool)
        if not np.any(known):
            return np.zeros((n_rows, self.d_out), dtype=np.float64)
        import torch  # a sparse × dense product: far faster than np.add.at on many entries

        index = torch.from_numpy(np.stack([np.asarray(rows)[known], position[known]]))
        X = torch.sparse_coo_tensor(index, torch.from_numpy(np.asarray(vals, np.float64)[known]),
                                    (n_rows, self.columns.size), check_invariants=False)
        values = torch.from_numpy(np.ascontiguousarray(self.values, dtype=np.float64))
        return torch.sparse.mm(X, values).numpy()


def block_layout(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each column sits in its block, for block labels 0..B−1 (`column_labels`).

    Returns (order, bounds, position): the columns sorted by block (stable, so ascending
    inside a block), the B+1 block boundaries in that order, and each column's position
    inside its block — the row of the block's Gram and basis that the column owns."""
    n_blocks = int(labels.max()) + 1 if labels.size else 0
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_blocks + 1))
    position = np.empty(labels.size, dtype=np.int64)
    position[order] = np.arange(labels.size) - np.repeat(bounds[:-1], np.diff(bounds))
    return order, bounds, position


def column_labels(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> np.ndarray:
    """Connected components of columns linked by shared rows (a bipartite pattern).

    Two columns are connected when some row has both. Returns labels (n_cols,) numbering the
    components 0..C−1 in order of their smallest column; columns in no row get −1.

    Vectorised min-label propagation with hooking and pointer jumping (a Shiloach–Vishkin
    style union-find): every round each row takes the smallest label among its columns,
    each column the smallest label among its rows, representatives are hooked onto smaller
    ones and label chains are collapsed. Converges in O(log n) rounds in practice; every
    round is a few sorted reductions over the nonzeros.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    labels = np.full(n_cols, -1, dtype=np.int64)
    if cols.size == 0:
        return labels
    by_row = np.argsort(rows, kind="stable")
    row_sorted = rows[by_row]
    row_starts = np.flatnonzero(np.r_[True, row_sorted[1:] != row_sorted[:-1]])
    row_sizes = np.diff(np.r_[row_starts, row_sorted.size])
    cols_by_row = cols[by_row]
    by_col = np.argsort(cols, kind="stable")
    col_sorted = cols[by_col]
    col_starts = np.flatnonzero(np.r_[True, col_sorted[1:] != col_sorted[:-1]])
    present = col_sorted[col_starts]

    parent = np.arange(n_cols, dtype=np.int64)
    while True:
        label_nnz = parent[cols_by_row]
        row_min = np.minimum.reduceat(label_nnz, row_starts)
        spread = np.empty(cols.size, dtype=np.int64)
        spread[by_row] = np.repeat(row_min, row_sizes)
        col_min = np.minimum.reduceat(spread[by_col], col_starts)
        updated = parent.copy()
        updated[present] = np.minimum(updated[present], col_min)
        # Hook: the old representative of each column follows its column's new label.
        np.minimum.at(updated, parent[present], updated[present])
        while True:  # pointer jumping until every label is a root
            jumped = updated[updated]
            if np.array_equal(jumped, updated):
                break
            updated = jumped
        if np.array_equal(updated, parent):
            break
        parent = updated
    roots = parent[present]
    _, compact = np.unique(roots, return_inverse=True)
    labels[present] = compact
    return labels


def sequence_pairs(data: object) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tokens (T,d), outputs (T,d_out)) pairs from a Traces object or a sequence of pairs."""
    if hasattr(data, "tokens") and hasattr(data, "outputs"):
        pairs = list(zip(data.tokens, data.outputs, strict=True))
    else:
        pairs = [(tokens, outputs) for tokens, outputs in data]
    out = []
    for tokens, outputs in pairs:
        tokens = np.asarray(tokens, dtype=np.float64)
        outputs = np.asarray(outputs, dtype=np.float64)
        if tokens.ndim != 2 or outputs.ndim != 2 or tokens.shape[0] != outputs.shape[0]:
            raise ValueError(
                f"a sequence needs tokens (T, d) and outputs (T, d_out) of equal T; got "
                f"{tokens.shape} and {outputs.shape}"
            )
        out.append((tokens, outputs))
    return out


def stack_features(
    sequences: Sequence[np.ndarray], progress: Callable[[str, int, int], None] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO features of all prefixes of all sequences, rows numbered globally."""
    rows, cols, vals = [], [], []
    offset = 0
    every = max(1, len(sequences) // 20)
    for i, tokens in enumerate(sequences):
        r, c, v = prefix_features(tokens)
        rows.append(r + offset)
        cols.append(c)
        vals.append(v)
        offset += tokens.shape[0]
        if progress is not None and (i % every == 0 or i == len(sequences) - 1):
            progress("features", i + 1, len(sequences))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
