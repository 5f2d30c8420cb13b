"""From regression coefficients back to heads: Algorithm 1, steps 4–5 (Yau et al., arXiv
2410.10101).

The coefficients live on reduced features {j,k},l. They are lifted to the matrix
W ∈ R^{(d_out·d) × (d·d)} with rows (a, j) = a·d + j and columns (k, l) = k·d + l, such that
y_a = Σ W[(a,j),(k,l)] S[j,k] z[l]. A diagonal coefficient p[{j,j},l] goes to W[(a,j),(j,l)];
an off-diagonal p[{j,k},l] is split evenly between W[(a,j),(k,l)] and W[(a,k),(j,l)] — the
paper's minimum-norm choice. Then W = Σ_h vec(V_h) vec(Q_h)ᵀ with V_h = fold(√σ u),
Q_h = fold(√σ v) from its SVD.

W of a one-hot program is large (≈ 2,000 × 6,500 for a 20-state 4-symbol automaton) but
very sparse and block-structured: its bipartite nonzero pattern (rows ↔ columns) splits
into connected components, and the SVD of W is the union of the SVDs of those blocks. So
only the blocks are ever made dense.

Tolerances (relative, documented because they decide the head count):
- ``ZERO_RTOL = 1e-12``: coefficients with |p| ≤ 1e-12·max|p| are round-off of exact zeros
  (the solve's forward error is ε·κ ≈ 1e-16·κ with κ well below 1e4 on these data); left
  in, they would glue unrelated blocks together. Dropping one changes an output by at most
  1e-12·max|p|·|S[j,k] z[l]|.
- ``RANK_RTOL = 1e-11``: singular values σ ≤ 1e-11·σ_max (over all blocks) are treated as
  zero. Round-off in a block's SVD is ≈ n·ε·σ_max ≲ 1e-12·σ_max for the block sizes here;
  a dropped direction changes an output by at most σ·‖S‖_F‖z‖.

Head packing (our addition; Yau et al., arXiv 2410.10101 says the paper gives no procedure for a
small head count). Algorithm 1 returns rank(W) heads — the *sum* of the block ranks, often
far more than the program needs (81 blocks of rank ≤ 22 for the automaton above). Two
blocks' leading singular pairs can share one head when the cross terms this creates,
u_b v_b′ᵀ and u_b′ v_bᵀ, only touch reduced features that never occur in the training data
(off its *support*): those coefficients are unconstrained by the regression, so the packed
model is still an exact empirical-risk minimiser, computes the same outputs on every
training prefix and on every input the certificate covers (whose features lie in the
span of the training features, inside the support). `recover_heads` packs only when it is
given that support; the head count is then Σ over packs of the largest block rank.

Memory (docs/ARCHITECTURE.md, "The learner"): before the block SVDs and again before the
heads are laid out, the peak is estimated from the shapes (`svd_bytes`, `head_bytes`) and
reserved against the memory budget in force (budget.py); over it, recovery does not start.
"""

from __future__ import annotations

import numpy as np

from lat.learner.budget import format_bytes, reserve
from lat.learner.features import Coefficients, column_labels, feature_triples, n_features

ZERO_RTOL = 1e-12
RANK_RTOL = 1e-11

__all__ = ["RANK_RTOL", "ZERO_RTOL", "head_bytes", "head_coefficients", "head_count",
           "heads_from_entries",
           "lift", "recover_heads", "support_coefficients", "svd_bytes", "train_error"]


def svd_bytes(shapes: list[tuple[int, int]]) -> int:
    """Peak bytes of the block SVDs of W's blocks of these (rows, cols) shapes, float64:
    every block's U, σ, Vᵀ are kept (twice while the rank is cut), and one block at a time
    is dense, with LAPACK's copy of it and its workspace."""
    kept = sum(m * min(m, n) + min(m, n) + min(m, n) * n for m, n in shapes)
    dense = max((2 * m * n + 4 * min(m, n) ** 2 for m, n in shapes), default=0)
    return 8 * (2 * kept + dense)


def head_bytes(heads: int, d: int, d_out: int) -> int:
    """Bytes of `heads` heads laid out densely: V (heads, d_out, d) and Q (heads, d, d),
    float64."""
    return 8 * heads * d * (d_out + d)


def lift(coefficients: Coefficients) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W as COO (rows (a,j), cols (k,l), values), off-diagonal pairs split evenly."""
    d = coefficients.d
    values = np.asarray(coefficients.values, dtype=np.float64)
    scale = float(np.abs(values).max()) if values.size else 0.0
    if scale == 0.0:
        empty = np.zeros(0, np.int64)
        return empty, empty.copy(), np.zeros(0, np.float64)
    which, a = np.nonzero(np.abs(values) > ZERO_RTOL * scale)
    p = values[which, a]
    j, k, l = feature_triples(d, coefficients.columns[which]).T
    diagonal = j == k
    rows = np.concatenate([a[diagonal] * d + j[diagonal],
                           a[~diagonal] * d + j[~diagonal],
                           a[~diagonal] * d + k[~diagonal]])
    cols = np.concatenate([j[diagonal] * d + l[diagonal],
                           k[~diagonal] * d + l[~diagonal],
                           j[~diagonal] * d + l[~diagonal]])
    vals = np.concatenate([p[diagonal], p[~diagonal] / 2, p[~diagonal] / 2])
    return rows.astype(np.int64), cols.astype(np.int64), vals


def recover_heads(
    coefficients: Coefficients | np.ndarray,
    d: int,
    d_out: int,
    *,
    support: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heads (V (H, d_out, d), Q (H, d, d)), float64, whose reduced coefficients are these.

    `coefficients` is a `Coefficients` or a dense (F, d_out) array. Without `support` the
    result has H = rank(W) heads (Algorithm 1). With `support` (sorted reduced columns that
    occur in the training data) blocks are packed into shared heads as described in the
    module docstring. A zero W gives one all-zero head (an artifact needs H ≥ 1).
    """
    if not isinstance(coefficients, Coefficients):
        coefficients = Coefficients.from_dense(np.asarray(coefficients), d)
    if coefficients.d != d or coefficients.d_out != d_out:
        raise ValueError(
            f"coefficients are for d={coefficients.d}, d_out={coefficients.d_out}, "
            f"not d={d}, d_out={d_out}"
        )
    rows, cols, vals = lift(coefficients)
    return heads_from_entries(rows, cols, vals, d, d_out, support=support)


def heads_from_entries(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, d: int,
                       d_out: int, *, support: np.ndarray | None = None,
                       columns: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Heads (V, Q) with Σ_h vec(V_h) vec(Q_h)ᵀ = W, for W given as COO entries (rows
    (a, j), cols (k, l); repeated entries add): block SVDs, then packing against `support`
    as in `recover_heads`. A zero W gives one all-zero head. `columns`: a block of full
    column rank is factored as its own columns times the identity instead — the same head
    count, exactly W, and as sparse as W (its SVD factors are dense)."""
    blocks = _block_svds(rows, cols, vals, d, keep_dense=columns)
    del rows, cols, vals
    kept = []
    for (block_rows, block_cols, u, s, vt, dense), rank in zip(blocks, _ranks(blocks),
                                                                strict=True):
        if rank and dense is not None and rank == block_cols.size:
            kept.append((block_rows, block_cols, dense, np.eye(rank)))
        elif rank:
            root = np.sqrt(s[:rank])
            kept.append((block_rows, block_cols, u[:, :rank] * root, vt[:rank].T * root))
    if not kept:
        return np.zeros((1, d_out, d)), np.zeros((1, d, d))
    ranks = [left.shape[1] for _, _, left, _ in kept]
    packs = (_pack([(r, c) for r, c, _, _ in kept], ranks, d, support)
             if support is not None else [[i] for i in range(len(kept))])
    heads = sum(max(ranks[i] for i in pack) for pack in packs)
    reserve("heads", head_bytes(heads, d, d_out),
            f"laying out {heads:,} heads (d = {d}, d_out = {d_out})")
    V = np.zeros((heads, d_out * d), dtype=np.float64)
    Q = np.zeros((heads, d * d), dtype=np.float64)
    first = 0
    for pack in packs:
        for i in pack:
            block_rows, block_cols, left, right = kept[i]
            rank = left.shape[1]
            V[first : first + rank, block_rows] = left.T
            Q[first : first + rank, block_cols] = right.T
        first += max(ranks[i] for i in pack)
    return V.reshape(heads, d_out, d), Q.reshape(heads, d, d)


def head_count(coefficients: Coefficients, support: np.ndarray | None = None) -> int:
    """The number of heads `recover_heads` gives (Algorithm 1's, packed against `support`
    when given), from the blocks' singular values alone: no head is laid out, so a fit
    whose heads another route replaces (the sparse gauge) never holds them."""
    blocks = _block_svds(*lift(coefficients), coefficients.d, values_only=True)
    kept = [(block[0], block[1], rank) for block, rank in zip(blocks, _ranks(blocks),
                                                             strict=True) if rank]
    if not kept:
        return 1
    ranks = [rank for _, _, rank in kept]
    packs = (_pack([(r, c) for r, c, _ in kept], ranks, coefficients.d, support)
             if support is not None else [[i] for i in range(len(kept))])
    return sum(max(ranks[i] for i in pack) for pack in packs)


def _ranks(blocks: list) -> list[int]:
    """Each block's rank: singular values above RANK_RTOL × the largest over all blocks."""
    if not blocks:
        return []
    sigma_max = max(float(s[0]) for _, _, _, s, _, _ in blocks)
    return [int(np.count_nonzero(s > RANK_RTOL * sigma_max)) for _, _, _, s, _, _ in blocks]


def _block_svds(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, d: int,
                keep_dense: bool = False, values_only: bool = False) -> list:
    """SVD of every connected block of W: (rows, cols, U, σ, Vᵀ, the block itself when
    `keep_dense`, else None) per block, σ descending; U and Vᵀ are None when
    `values_only`."""
    if vals.size == 0:
        return []
    labels = column_labels(rows, cols, d * d)[cols]  # one component per entry
    order = np.argsort(labels, kind="stable")
    labels, rows, cols, vals = labels[order], rows[order], cols[order], vals[order]
    bounds = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1], True])
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    indexed = [(np.unique(rows[start:stop], return_inverse=True),
                np.unique(cols[start:stop], return_inverse=True)) for start, stop in spans]
    shapes = [(r[0].size, c[0].size) for r, c in indexed]
    needed = (8 * max((2 * m * n + min(m, n) for m, n in shapes), default=0) if values_only
              else svd_bytes(shapes) + (8 * sum(m * n for m, n in shapes) if keep_dense else 0))
    reserve("heads", needed, f"the SVD of {len(shapes):,} blocks of W (largest "
            f"{format_bytes(8 * max(m * n for m, n in shapes))} dense)" if shapes else "")
    out = []
    for (start, stop), ((block_rows, r), (block_cols, c)) in zip(spans, indexed, strict=True):
        dense = np.zeros((block_rows.size, block_cols.size), dtype=np.float64)
        np.add.at(dense, (r, c), vals[start:stop])  # a pair entry may receive two halves
        if values_only:
            out.append((block_rows, block_cols, None, np.linalg.svd(dense, compute_uv=False),
                        None, None))
            continue
        u, s, vt = np.linalg.svd(dense, full_matrices=False)
        out.append((block_rows, block_cols, u, s, vt, dense if keep_dense else None))
    return out


def _pack(blocks: list[tuple[np.ndarray, np.ndarray]], ranks: list[int], d: int,
          support: np.ndarray) -> list[list[int]]:
    """Greedy first-fit packing of blocks ((W rows, W cols) each, of these ranks) into
    shared heads (largest rank first).

    A block joins a pack when every cross term with the pack's members lands on a reduced
    feature outside `support`: entry ((a,j),(k,l)) of W multiplies feature {j,k},l.
    """
    support = np.asarray(support, dtype=np.int64)
    order = sorted(range(len(blocks)), key=lambda i: -ranks[i])
    packs: list[list[int]] = []
    pack_j: list[np.ndarray] = []  # value-side coordinates j of each pack's rows
    pack_cols: list[np.ndarray] = []  # query-side columns (k, l) of each pack
    for i in order:
        block_rows, block_cols = blocks[i]
        js = np.unique(block_rows % d)
        for p in range(len(packs)):
            if _disjoint_cross(js, pack_cols[p], d, support) and _disjoint_cross(
                pack_j[p], block_cols, d, support
            ):
                packs[p].append(i)
                pack_j[p] = np.union1d(pack_j[p], js)
                pack_cols[p] = np.union1d(pack_cols[p], block_cols)
                break
        else:
            packs.append([i])
            pack_j.append(js)
            pack_cols.append(block_cols)
    return packs


def _disjoint_cross(js: np.ndarray, cols: np.ndarray, d: int, support: np.ndarray) -> bool:
    """True when no feature {j,k},l with j in js and (k,l) in cols is in the support."""
    if support.size == 0:
        return True
    k, l = np.divmod(cols, d)
    lo = np.minimum(js[:, None], k[None, :])
    hi = np.maximum(js[:, None], k[None, :])
    features = ((lo * d - (lo * (lo - 1)) // 2 + (hi - lo)) * d + l[None, :]).ravel()
    position = np.minimum(np.searchsorted(support, features), support.size - 1)
    return not bool(np.any(support[position] == features))


def head_coefficients(V: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The map p(Θ) of Corollary A.4: dense (F, d_out) reduced coefficients of heads V, Q.

    Two head sets compute the same function exactly when these coefficients agree.
    Memory is O(d_out·d³): for small and moderate d (tests, diagnostics).
    """
    V = np.asarray(V, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    d_out, d = V.shape[1], V.shape[2]
    W = np.einsum("haj,hkl->ajkl", V, Q)
    j, k, l = feature_triples(d).T
    p = W[:, j, k, l] + np.where(j != k, W[:, k, j, l], 0.0)
    out = p.T.copy()
    assert out.shape == (n_features(d), d_out)
    return out


def support_coefficients(V: np.ndarray, Q: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """p(Θ) of heads V, Q (Corollary A.4) on the given reduced columns: (n, d_out).

    p[{j,k},l] = Σ_h V_h[:,j] Q_h[k,l] (+ V_h[:,k] Q_h[j,l] when j ≠ k). An MHLA's output
    on any prefix is exactly ⟨p(Θ), H(Z)⟩, so on prefixes whose features lie on these
    columns this gives the heads' outputs at a cost of O(n·H·d_out) instead of a rollout.
    """
    d, d_out = V.shape[2], V.shape[1]
    j, k, l = feature_triples(d, np.asarray(columns, dtype=np.int64)).T
    out = np.zeros((j.size, d_out), dtype=np.float64)
    off = j != k
    # group by the value-side coordinate: one (n_j × H) @ (H × d_out) product per value
    for first, second, third, mask in ((j, k, l, None), (k, j, l, off)):
        idx = np.arange(j.size) if mask is None else np.flatnonzero(mask)
        by = first[idx]
        order = np.argsort(by, kind="stable")
        idx, by = idx[order], by[order]
        bounds = np.flatnonzero(np.r_[True, by[1:] != by[:-1], True]) if by.size else []
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            rows = idx[a:b]
            out[rows] += Q[:, second[rows], third[rows]].T @ V[:, :, int(by[a])]
    return out


def train_error(V: np.ndarray, Q: np.ndarray, support: np.ndarray, rows: np.ndarray,
                cols: np.ndarray, vals: np.ndarray, Y: np.ndarray) -> float:
    """max |outputs of heads V, Q − Y| over every training prefix (exact, via p(Θ))."""
    if not Y.size:
        return 0.0
    d, d_out = V.shape[2], V.shape[1]
    head_values = support_coefficients(V, Q, support)
    learned = Coefficients(d, d_out, support, head_values).predict(rows, cols, vals,
                                                                   Y.shape[0])
    return float(np.abs(learned - Y).max())
