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
compressed one at a time (each chunk's own basis), which keeps the identity, and then
merged by an orthogonal map of their count rows (`compress_rows`), so a token with many
chunks still leaves rank(C_c) rows: on the copy machine's 8,360 traces the block solve fell
from 51 s to 26 s, with the same ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHUNK_ROWS = 4096  # rows of one current token compressed at once
CHUNK_ENTRIES = 1 << 23  # count entries built at once (prefix lengths summed)
BATCH_ENTRIES = 1 << 22  # dense numbers of one chunk of a block's rows

__all__ = ["PrefixCounts", "basis_times_rows", "compress_rows", "CountSpanIndex",
           "count_basis", "dense_rows", "row_groups", "token_groups"]


class PrefixCounts:
    """Token ids of every position of every sequence, in the fit's global row order."""

    def __init__(self, sequences: Sequence[np.ndarray], index: dict[bytes, int] | None = None,
                 grow: bool = True) -> None:
        """Ids numbered in order of first appearance, continuing `index` (shared, not
        copied); with grow=False a token not in `index` gets id −1."""
        index = {} if index is None else index
        ids, starts, offset = [], [], 0
        for tokens in sequences:
            tokens = np.ascontiguousarray(tokens, dtype=np.float64)
            T = tokens.shape[0]
            if T:
                rows = tokens.view(np.dtype((np.void, tokens.dtype.itemsize * tokens.shape[1])))
                distinct, inverse = np.unique(rows.reshape(-1), return_inverse=True)
                local = np.array([index.setdefault(bytes(u), len(index)) if grow
                                  else index.get(bytes(u), -1) for u in distinct],
                                 dtype=np.int64)
                ids.append(local[inverse.reshape(-1)])
            starts.append(np.full(T, offset, dtype=np.int64))
            offset += T
        self.ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.vocabulary = len(index)
        self.index = index

    def counts_over(self, rows: np.ndarray, u: int) -> np.ndarray:
        """Dense count vectors (len(rows), u) of the prefixes ending at `rows`, over token
        ids 0..u−1 (every token of these prefixes must have an id below u)."""
        lengths = rows - self.starts[rows] + 1
        owner = np.repeat(np.arange(rows.size), lengths)
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths,
                                                           lengths)
        tokens = self.ids[np.repeat(self.starts[rows], lengths) + within]
        flat = np.bincount(owner * u + tokens, minlength=rows.size * u)
        return flat.reshape(rows.size, u).astype(np.float64)

    def counts(self, rows: np.ndarray) -> np.ndarray:
        """Dense count vectors (len(rows), u) of the prefixes ending at global `rows`, over
        the u tokens they use (columns in no particular order)."""
        return self.counts_of(rows)[1]

    def counts_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The token ids the prefixes ending at global `rows` use (sorted) and their dense
        count vectors (len(rows), len(ids)) over those ids, in that order."""
        lengths = rows - self.starts[rows] + 1
        owner = np.repeat(np.arange(rows.size), lengths)
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths,
                                                           lengths)
        tokens = self.ids[np.repeat(self.starts[rows], lengths) + within]
        used, local = np.unique(tokens, return_inverse=True)
        flat = np.bincount(owner * used.size + local.reshape(-1),
                           minlength=rows.size * used.size)
        return used, flat.reshape(rows.size, used.size).astype(np.float64)


def compress_rows(prefix_counts: PrefixCounts, sample_rows: np.ndarray,
                  local_row: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int,
                  Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Y') with ZᵀZ = XᵀX and ZᵀY' = XᵀY, Z dense with at most Σ_c rank(C_c) rows.

    X is one block: m = sample_rows.size rows (their global rows), entries (local_row, cols,
    vals) sorted by local row, n columns; Y (m, d_out) its outputs.

    Each chunk of one current token's rows is compressed on its own (Z_i = B_iᵀX_i, B_i an
    orthonormal basis of its count columns, or the rows as they are), and so is its count
    matrix (K_i = B_iᵀC_i, so that Z_i = K_i M_cᵀ). Where a token's chunks leave more rows
    than the count space has dimensions, they are merged by the left singular vectors P of
    the stacked K (PPᵀ fixes every column of the stacked Z = K M_cᵀ): Pᵀ[Z_1; Z_2; …]
    keeps the Gram and XᵀY and has rank(C_c) rows, through orthogonal maps only."""
    row_ptr = np.searchsorted(local_row, np.arange(sample_rows.size + 1))
    Z, Yc = [], []
    for chunks in token_groups(prefix_counts, sample_rows, n):
        parts = []  # (Z_i, Y_i, used token ids, K_i) of each chunk of this token
        for part in chunks:
            used, C = prefix_counts.counts_of(sample_rows[part])
            basis = count_basis(C)
            if basis is None:  # nothing to save: the rows as they are
                parts.append((dense_rows(row_ptr, cols, vals, part, n), Y[part], used, C))
            else:
                parts.append((basis_times_rows(basis, row_ptr, cols, vals, part, n),
                              basis.T @ Y[part], used, basis.T @ C))
        merged = _merged(parts)
        Z.append(merged[0])
        Yc.append(merged[1])
    if not Z:
        return np.zeros((0, n)), Y[:0]
    return np.concatenate(Z), np.concatenate(Yc)


def _merged(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
            ) -> tuple[np.ndarray, np.ndarray]:
    """One current token's chunks as ≤ rank(C_c) rows (see `compress_rows`)."""
    Z = np.concatenate([z for z, _, _, _ in parts])
    Yp = np.concatenate([y for _, y, _, _ in parts])
    union = np.unique(np.concatenate([used for _, _, used, _ in parts]))
    if len(parts) == 1 or Z.shape[0] <= union.size:
        return Z, Yp
    K = np.zeros((Z.shape[0], union.size))
    first = 0
    for _, _, used, k in parts:
        K[first: first + k.shape[0], np.searchsorted(union, used)] = k
        first += k.shape[0]
    P = count_basis(K)
    return (Z, Yp) if P is None else (P.T @ Z, P.T @ Yp)


def token_groups(prefix_counts: PrefixCounts, sample_rows: np.ndarray, n: int
                 ) -> list[list[np.ndarray]]:
    """Positions in `sample_rows` grouped by current token: each token's list of chunks,
    small enough to compress at once (CHUNK_ROWS rows, CHUNK_ENTRIES count entries)."""
    batch = max(1, min(CHUNK_ROWS, BATCH_ENTRIES // max(n, 1)))
    current = prefix_counts.ids[sample_rows]
    order = np.argsort(current, kind="stable")
    bounds = np.flatnonzero(np.r_[True, current[order][1:] != current[order][:-1], True])
    groups = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        group = order[a:b]
        groups.append([piece for first in range(0, group.size, batch)
                       for piece in _within_entries(prefix_counts, sample_rows,
                                                    group[first: first + batch])])
    return groups


def dense_rows(row_ptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, rows: np.ndarray,
                n: int) -> np.ndarray:
    """Rows `rows` (local) of a block stored as entries sorted by row, as a dense array."""
    lengths = row_ptr[rows + 1] - row_ptr[rows]
    owner = np.repeat(np.arange(rows.size), lengths)
    entries = np.repeat(row_ptr[rows], lengths) + (
        np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    X = np.zeros((rows.size, n))
    X[owner, cols[entries]] = vals[entries]
    return X


def row_groups(prefix_counts: PrefixCounts, sample_rows: np.ndarray, n: int
               ) -> list[np.ndarray]:
    """Positions in `sample_rows` grouped by current token, each group cut into chunks
    small enough to compress at once (CHUNK_ROWS rows, CHUNK_ENTRIES count entries)."""
    return [chunk for chunks in token_groups(prefix_counts, sample_rows, n)
            for chunk in chunks]


def _within_entries(prefix_counts: PrefixCounts, sample_rows: np.ndarray,
                    chunk: np.ndarray) -> list[np.ndarray]:
    """`chunk` split so that each part's count entries stay within CHUNK_ENTRIES."""
    rows = sample_rows[chunk]
    lengths = rows - prefix_counts.starts[rows] + 1
    total = np.cumsum(lengths)
    cuts = np.searchsorted(total, np.arange(CHUNK_ENTRIES, int(total[-1]), CHUNK_ENTRIES))
    return [p for p in np.split(chunk, np.unique(np.maximum(cuts, 1))) if p.size]


def count_basis(C: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis (k, r) of the column space of a count matrix C (k, u), or None
    when it would not be smaller than the k rows themselves."""
    k, u = C.shape
    if k <= u:
        return None
    left, singular, _ = np.linalg.svd(C, full_matrices=False)
    # numerical rank of an integer matrix: drop only round-off-sized singular values
    keep = singular > singular[0] * max(k, u) * np.finfo(np.float64).eps * 8
    return left[:, keep] if keep.sum() < k else None


def basis_times_rows(basis: np.ndarray, row_ptr: np.ndarray, cols: np.ndarray,
                     vals: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """basisᵀ X_rows (r, n) from the sparse rows (entries sorted by row, `row_ptr`): a
    sparse product, nnz·r, where the dense one would cost rows·n·r."""
    import torch  # sparse × dense: numpy has none

    lengths = row_ptr[rows + 1] - row_ptr[rows]
    owner = np.repeat(np.arange(rows.size), lengths)
    entries = np.repeat(row_ptr[rows], lengths) + (
        np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    index = torch.from_numpy(np.stack([cols[entries], owner]))
    Xt = torch.sparse_coo_tensor(index, torch.from_numpy(np.asarray(vals[entries], np.float64)),
                                 (n, rows.size), check_invariants=False)
    return torch.sparse.mm(Xt, torch.from_numpy(np.ascontiguousarray(basis))).numpy().T


# -- count spans: coverage without features ------------------------------------------------

COUNT_SPAN_MAX_VOCABULARY = 2048  # larger vocabularies skip the count-space pre-check
COUNT_COVERED_RTOL = 1e-12  # a count vector this close to L_c (relative) lies in it


class CountSpanIndex:
    """Per current token c, an orthonormal basis of L_c: the span of the training prefixes'
    count vectors that end at c.

    A prefix with current token c and count vector n ∈ L_c has features M_c n in
    M_c L_c = span of the training features ending at c, so it is covered in exact
    arithmetic — found with |U|² work instead of its features (certificate.py). The fit
    builds this only when its kept span is every training direction (no eigenvalue between
    round-off and the cut-off), so that the numerical span holds M_c L_c too."""

    def __init__(self, prefix_counts: PrefixCounts) -> None:
        self.index = prefix_counts.index
        self.bases: dict[int, np.ndarray] = {}
        u = prefix_counts.vocabulary
        everything = np.arange(prefix_counts.ids.size)
        current = prefix_counts.ids
        order = np.argsort(current, kind="stable")
        bounds = np.flatnonzero(np.r_[True, current[order][1:] != current[order][:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            rows = everything[order[a:b]]
            basis = np.zeros((u, 0))
            for first in range(0, rows.size, CHUNK_ROWS):
                C = prefix_counts.counts_over(rows[first: first + CHUNK_ROWS], u)
                stacked = np.concatenate([basis.T, C]) if basis.shape[1] else C
                _, singular, right = np.linalg.svd(stacked, full_matrices=False)
                keep = singular > singular[0] * max(stacked.shape) * np.finfo(float).eps * 8
                basis = right[keep].T  # orthonormal: the row space of everything so far
            self.bases[int(current[order[a]])] = basis

    def residuals(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Relative residual ‖n − Π_c n‖ / ‖n‖ of every prefix's count vector against
        L_c of its current token c (inf where a token was never in the training data)."""
        prefix_counts = PrefixCounts(sequences, self.index, grow=False)
        u = len(self.index)
        out = np.full(prefix_counts.ids.size, np.inf)
        known_prefix = np.ones(prefix_counts.ids.size, dtype=bool)
        unknown = prefix_counts.ids < 0
        if unknown.any():  # a prefix holding a token never trained on is not in any L_c
            seen = np.maximum.accumulate(np.where(unknown, np.arange(unknown.size), -1))
            known_prefix = seen < prefix_counts.starts
        current = prefix_counts.ids
        for c, basis in self.bases.items():
            rows = np.flatnonzero((current == c) & known_prefix)
            for first in range(0, rows.size, CHUNK_ROWS):
                part = rows[first: first + CHUNK_ROWS]
                N = prefix_counts.counts_over(part, u)
                left = N - (N @ basis) @ basis.T
                norms = np.linalg.norm(N, axis=1)
                out[part] = np.linalg.norm(left, axis=1) / np.maximum(norms, 1e-300)
        return out
