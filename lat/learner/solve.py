"""Algorithm 1's regression, exact in float64, at the sizes one-hot programs produce.

Every prefix z_1..z_t of every recorded sequence is one sample: its sparse reduced features
(features.py) and its recorded output y_t. The fit is ordinary least squares with the
minimum-norm solution, computed in three steps that exploit the structure of the data:

1. **Support.** Only feature columns that are nonzero in some sample can carry information;
   all other coefficients are set to 0 (the minimum-norm choice). `features_used` counts
   the support, `features_total` = d²(d+1)/2.
2. **Components.** Two support columns are linked when one sample has both nonzero. The
   connected components partition the columns and the samples (each sample lies in one
   component, or none when all its features are zero), and the Gram XᵀX is block-diagonal
   over them — e.g. for one-hot tokens the current token's coordinate l separates blocks.
   The regression splits into one small independent problem per block.
3. **Per block** the Gram G_b = X_bᵀX_b and X_bᵀY_b are accumulated in float64 from dense
   row batches of at most `BATCH_ENTRIES` numbers (the full design matrix never exists
   densely), and Λ_b = G_b/N is diagonalised with `eigh`. When a block has fewer samples
   than columns the same eigenpairs come from the N_b×N_b kernel X_bX_bᵀ instead (the
   dual, docs/ARCHITECTURE.md, "The certificate"). The eigen-decomposition is kept for the
   certificate.

Eigenvalue cut-off (decides the rank of every block, hence the minimum-norm solution and
the span used by the certificate): an eigenvalue λ of Λ_b counts as zero when

    λ ≤ λ_max(Λ_b) · max(EIG_RTOL, 64 · n_b · ε),    EIG_RTOL = 1e-11, ε = 2.2e-16.

`eigh` computes eigenvalues with absolute error O(n_b·ε·λ_max), and forming G_b in float64
adds O(ε·λ_max) per entry and batch: exactly singular directions come out within ~1e-14 of
zero relative to λ_max, so the floor 1e-11 leaves three decades of margin. In singular-value
terms it drops directions of X_b with σ below ≈ 3e-6·σ_max, where least squares would
amplify round-off in y by more than 3e5 anyway. Erring on the large side is the safe side
for the certificate: a smaller span can only make coverage harder to claim.

The kept eigenpairs give w_b = U_r diag(1/λ_r) U_rᵀ (X_bᵀY_b/N), followed by one step of
iterative refinement against the accumulated Gram.

The fit then recovers heads (heads.py) and reports `train_max_abs_error` from those heads
on every training prefix (exactly, as ⟨p(V, Q), H(Z)⟩ on the support), so that any loss in
head recovery shows up in the number a user reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from lat.learner.compress import (
    COUNT_SPAN_MAX_VOCABULARY,
    CountSpanIndex,
    PrefixCounts,
    compress_rows,
)
from lat.learner.features import (  # sequence_pairs, stack_features: re-exported
    Coefficients,
    block_layout,
    column_labels,
    n_features,
    sequence_pairs,
    stack_features,
)
from lat.learner.heads import (  # support_coefficients: re-exported
    recover_heads,
    support_coefficients,
    train_error,
)
from lat.learner.minimise import fewer_heads, minimise_fit
from lat.runtime.errors import ResourceError

EIG_RTOL = 1e-11
BATCH_ENTRIES = 1 << 22  # dense numbers per row batch of one block (32 MiB of float64)
COMPRESS_MIN_RATIO = 4  # compress when there are this many prefixes per distinct token
DENSE_LIMIT = 1 << 27  # largest dense array of one block (numbers), primal or dual

Progress = Callable[[str, int, int], None]

__all__ = ["EIG_RTOL", "Block", "BlockTooLarge", "Fit", "fit", "mhla_outputs", "minimal_heads",
           "row_batches", "sequence_pairs", "solve_rows", "support_coefficients", "with_heads"]


class BlockTooLarge(ResourceError):
    """One connected block of the regression is past DENSE_LIMIT: no fit of this data."""


@dataclass(frozen=True)
class Block:
    """One connected component of the feature columns and its piece of Λ_D = XᵀX/N.

    `columns` are global reduced-feature columns (sorted); `eigenvalues` are all n_b
    eigenvalues of Λ_b (ascending, as computed: values at or below `cutoff` are numerical
    zeros and may be slightly negative); `basis` (n_b, r) holds the orthonormal eigenvectors
    whose eigenvalue is above `cutoff` — the span of the block's training features.
    """

    columns: np.ndarray
    eigenvalues: np.ndarray
    basis: np.ndarray
    cutoff: float
    samples: int
    dual: bool = False

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    @property
    def kept_eigenvalues(self) -> np.ndarray:
        return self.eigenvalues[self.eigenvalues > self.cutoff]


@dataclass(frozen=True)
class Fit:
    """Result of the regression and head recovery on one training set."""

    d: int
    d_out: int
    samples: int  # N, regression pairs (prefix, output)
    sequences: int
    features_total: int
    features_used: int
    coefficients: Coefficients  # on the support, (features_used, d_out)
    blocks: tuple[Block, ...]
    support_block: np.ndarray  # block index of every support column
    support_position: np.ndarray  # position of every support column inside its block
    V: np.ndarray  # (H, d_out, d) float64
    Q: np.ndarray  # (H, d, d) float64
    train_max_abs_error: float  # learned heads vs recorded outputs, all training prefixes
    coefficient_max_abs_error: float  # the same from the coefficients, before heads
    output_scale: float  # max |y| over the training samples
    featureless_samples: int  # samples whose features are all zero (predicted 0)
    seconds: dict[str, float] = field(default_factory=dict)
    heads_before_minimising: int | None = None  # heads from recover_heads, before minimising
    count_spans: CountSpanIndex | None = field(default=None, repr=False, compare=False)
    # what the fewest-heads search tried and kept (minimise.minimise_fit); empty before it
    head_search: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def heads(self) -> int:
        """Heads laid out (0 for a fit made with heads=False, until `minimal_heads`)."""
        return int(self.V.shape[0])

    @property
    def support(self) -> np.ndarray:
        return self.coefficients.columns


def heads_of(
    coefficients: Coefficients, support: np.ndarray, pack_heads: bool, minimise: bool,
    blocks: Sequence[Block] | None = None, support_block: np.ndarray | None = None,
    support_position: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Heads from the coefficients: SVD (packed on the support), then the fewest-heads
    search (minimise.py) unless `minimise` is False, along the data's null space with the
    fit's `blocks`. Returns V, Q and the head count before the search."""
    d, d_out = coefficients.d, coefficients.d_out
    V, Q = recover_heads(coefficients, d, d_out, support=support if pack_heads else None)
    found = (fewer_heads(coefficients, blocks, support_block, support_position, V, Q)
             if minimise else None)
    return (*(found or (V, Q)), int(V.shape[0]))


def fit(
    data: object,
    *,
    pack_heads: bool = True,
    progress: Progress | None = None,
    minimise: bool = True,
    heads: bool = True,
) -> Fit:
    """Least-squares fit of an MHLA to every prefix of every sequence, then heads.

    `data` is a `Traces` or a sequence of (tokens (T, d), outputs (T, d_out)) pairs.
    `pack_heads` lets head recovery share heads between blocks where that only changes
    coefficients off the training support (heads.py); False gives Algorithm 1's rank(W).
    `minimise` (default on; False skips it) searches for fewer heads with the same outputs
    on every training prefix (`minimise.minimise_heads`: alternating least squares over
    the antisymmetric part, the features off the support and the data's null space). The
    minimised heads are kept only when fewer and when they reproduce the training outputs
    (`minimise.minimise_fit`); `heads_before_minimising` records recover_heads' count either way.
    `heads=False` stops after the regression: no heads (`Fit.heads` is 0,
    `train_max_abs_error` is the coefficients' own), for a caller that gets them later from
    `minimal_heads` (learn, whose design refits and whose gauge would replace them).
    """
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    pairs = sequence_pairs(data)
    if not pairs or sum(t.shape[0] for t, _ in pairs) == 0:
        raise ValueError("no training samples: every sequence is empty")
    d = pairs[0][0].shape[1]
    d_out = pairs[0][1].shape[1]
    for tokens, outputs in pairs:
        if tokens.shape[1] != d or outputs.shape[1] != d_out:
            raise ValueError("all sequences must share token width d and output width d_out")

    rows, cols, vals = stack_features([t for t, _ in pairs], progress)
    Y = np.concatenate([o for _, o in pairs], axis=0)
    N = Y.shape[0]
    seconds["features"] = time.perf_counter() - clock
    prefix_counts = _prefix_counts([t for t, _ in pairs], N)

    clock = time.perf_counter()
    support, local = np.unique(cols, return_inverse=True)
    labels = column_labels(rows, local, support.size)
    col_order, col_bounds, support_position = block_layout(labels)
    n_blocks = col_bounds.size - 1
    entry_block = labels[local]
    order = np.lexsort((rows, entry_block))
    entry_bounds = np.searchsorted(entry_block[order], np.arange(n_blocks + 1))
    seconds["components"] = time.perf_counter() - clock

    clock = time.perf_counter()
    values = np.zeros((support.size, d_out), dtype=np.float64)
    predicted = np.zeros((N, d_out), dtype=np.float64)
    blocks = []
    for b in range(n_blocks):
        take = order[entry_bounds[b] : entry_bounds[b + 1]]
        block_columns = col_order[col_bounds[b] : col_bounds[b + 1]]
        block, w, fitted_rows, fitted = _solve_block(
            rows[take], support_position[local[take]], vals[take], support[block_columns], Y, N,
            prefix_counts)
        blocks.append(block)
        values[block_columns] = w
        predicted[fitted_rows] = fitted
        if progress is not None and (b % 64 == 0 or b == n_blocks - 1):
            progress("solve", b + 1, n_blocks)
    count_spans = (CountSpanIndex(prefix_counts) if prefix_counts is not None
                   and prefix_counts.vocabulary <= COUNT_SPAN_MAX_VOCABULARY
                   and not any(_marginal(b) for b in blocks) else None)
    coefficients = Coefficients(d, d_out, support, values)
    featured = np.zeros(N, dtype=bool)
    featured[rows] = True
    seconds["solve"] = time.perf_counter() - clock

    coefficient_error = float(np.abs(predicted - Y).max()) if Y.size else 0.0
    if heads:
        clock = time.perf_counter()
        V, Q, heads_before = heads_of(coefficients, support, pack_heads, False)
        seconds["heads"] = time.perf_counter() - clock
        clock = time.perf_counter()
        error = train_error(V, Q, support, rows, cols, vals, Y)
        seconds["train_check"] = time.perf_counter() - clock
    else:
        V, Q, heads_before, error = np.zeros((0, d_out, d)), np.zeros((0, d, d)), None, \
            coefficient_error

    fitted = Fit(
        d=d,
        d_out=d_out,
        samples=N,
        sequences=len(pairs),
        features_total=n_features(d),
        features_used=int(support.size),
        coefficients=coefficients,
        blocks=tuple(blocks),
        support_block=labels,
        support_position=support_position,
        V=V,
        Q=Q,
        train_max_abs_error=error,
        coefficient_max_abs_error=coefficient_error,
        output_scale=float(np.abs(Y).max()) if Y.size else 0.0,
        featureless_samples=int(N - np.count_nonzero(featured)),
        seconds=seconds,
        heads_before_minimising=heads_before,
        count_spans=count_spans,
    )
    return minimise_fit(fitted, lambda: (rows, cols, vals, Y)) if minimise and heads else fitted


def minimal_heads(fitted: Fit, data: object, seconds: float | None = None,
                  groups: np.ndarray | None = None) -> Fit:
    """`fitted` with the fewest heads the minimiser finds (minimise.py), or unchanged.

    For callers that fit several times and keep only the last (`learn`'s data design): fit
    with minimise=False, then minimise once. `data` are the fit's training sequences;
    `seconds` bounds the search (default the minimiser's own limit). `groups` (the token
    field of every coordinate, `gauge.coordinate_groups`) lets a fit with more heads than
    the search tries take the sparse gauge's heads (gauge.py) as a candidate."""
    return minimise_fit(fitted, lambda: _training(data), seconds, groups)


def _training(data: object) -> tuple[np.ndarray, ...]:
    """The training sequences' sparse features (rows, cols, vals) and stacked outputs."""
    pairs = sequence_pairs(data)
    rows, cols, vals = stack_features([t for t, _ in pairs], None)
    return rows, cols, vals, np.concatenate([o for _, o in pairs], axis=0)


def with_heads(fitted: Fit, data: object, pack_heads: bool = True) -> Fit:
    """A fit made with heads=False, given Algorithm 1's heads (packed on the support unless
    `pack_heads` is False) and their error on every training prefix of `data` (its
    training sequences). Head recovery reserves its memory (heads.py)."""
    clock = time.perf_counter()
    V, Q, heads_before = heads_of(fitted.coefficients, fitted.support, pack_heads, False)
    seconds = dict(fitted.seconds, heads=time.perf_counter() - clock)
    clock = time.perf_counter()
    error = train_error(V, Q, fitted.support, *_training(data))
    seconds["train_check"] = time.perf_counter() - clock
    return replace(fitted, V=V, Q=Q, train_max_abs_error=error,
                   heads_before_minimising=heads_before, seconds=seconds)


def _prefix_counts(sequences: Sequence[np.ndarray], samples: int) -> PrefixCounts | None:
    """Token counts for count compression, when the tokens repeat enough to gain from it
    (one-hot programs: a few hundred distinct tokens; not Gaussian test tokens)."""
    counts = PrefixCounts(sequences)
    return counts if counts.vocabulary * COMPRESS_MIN_RATIO <= samples else None


def _marginal(block: Block) -> bool:
    """Did the cut-off drop an eigenvalue above round-off (a real but faint direction)?"""
    top = float(block.eigenvalues.max()) if block.eigenvalues.size else 0.0
    noise = top * 64.0 * block.eigenvalues.size * np.finfo(np.float64).eps
    dropped = block.eigenvalues[block.eigenvalues <= block.cutoff]
    return bool(np.any(dropped > noise))


def cutoff_for(eigenvalues: np.ndarray) -> float:
    """Eigenvalues of one block at or below this are numerical zeros (see module doc)."""
    top = float(eigenvalues.max()) if eigenvalues.size else 0.0
    n = eigenvalues.size
    return max(top, 0.0) * max(EIG_RTOL, 64.0 * n * np.finfo(np.float64).eps)


def _solve_block(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, columns: np.ndarray, Y: np.ndarray,
    N: int, prefix_counts: PrefixCounts | None = None,
) -> tuple[Block, np.ndarray, np.ndarray, np.ndarray]:
    """Min-norm least squares on one block: entries (global sample row, position in the
    block, value) sorted by row; `columns` the block's global feature columns. Returns the
    Block, its coefficients (n, d_out), its sample rows and their fitted outputs.

    With `prefix_counts` the rows are first count-compressed (compress.py: the same Gram
    and XᵀY from at most |U| rows per current token)."""
    n = columns.size
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    sample_rows = rows[starts]
    m = sample_rows.size
    local_row = np.repeat(np.arange(m), np.diff(np.r_[starts, rows.size]))
    Yb = Y[sample_rows]
    Z = Yz = None
    if prefix_counts is not None and m > 1:
        Z, Yz = compress_rows(prefix_counts, sample_rows, local_row, cols, vals, n, Yb)
        if Z.shape[0] >= m:  # nothing saved: the rows as they are
            Z = Yz = None
    compressed = Z is not None
    r = m if Z is None else Z.shape[0]
    if n * min(r, n) > DENSE_LIMIT:  # primal Gram n², or dual X and basis n·r
        raise BlockTooLarge(
            f"a connected block of {n:,} features over {m:,} prefixes ({min(r, n):,} rows "
            f"after compression) is too large to solve densely ({n:,}·{min(r, n):,} > "
            f"{DENSE_LIMIT:,} numbers); train on fewer or shorter words (--max-traces, "
            "--samples, --max-len, --design-rounds)")

    def fitted_rows(w: np.ndarray) -> np.ndarray:  # X w on the real rows
        fitted = np.zeros((m, Y.shape[1]), dtype=np.float64)
        for first, X in row_batches(local_row, cols, vals, m, n):
            fitted[first : first + X.shape[0]] = X @ w
        return fitted

    if r < n or compressed:
        if Z is None:  # dual on the rows as they are
            Z = np.zeros((m, n), dtype=np.float64)
            Z[local_row, cols] = vals
            Yz = Yb
        block, w = solve_rows(Z, Yz, columns, N, m)
        return block, w, sample_rows, fitted_rows(w) if compressed else Z @ w

    G = np.zeros((n, n), dtype=np.float64)
    XtY = np.zeros((n, Y.shape[1]), dtype=np.float64)
    for first, X in row_batches(local_row, cols, vals, m, n):
        G += X.T @ X
        XtY += X.T @ Yb[first : first + X.shape[0]]
    lam, U_r, cutoff, w = solve_gram(G / N, XtY / N)
    return Block(columns, lam, U_r, cutoff, m, False), w, sample_rows, fitted_rows(w)


def solve_rows(Z: np.ndarray, Yz: np.ndarray, columns: np.ndarray, N: int, samples: int
               ) -> tuple[Block, np.ndarray]:
    """Min-norm least squares of one block given rows Z (r, n) and outputs Yz whose ZᵀZ and
    ZᵀYz are the block's (its rows, or count-compressed ones): the dual r×r kernel when
    r < n, else the primal Gram. `samples` is the block's real row count."""
    r, n = Z.shape
    if r >= n:
        lam, U_r, cutoff, w = solve_gram((Z.T @ Z) / N, (Z.T @ Yz) / N)
        return Block(columns, lam, U_r, cutoff, samples, False), w
    lam, A = np.linalg.eigh((Z @ Z.T) / N)  # the same nonzero eigenvalues as ZᵀZ/N
    cutoff = cutoff_for(lam)
    keep = lam > cutoff
    lam_r, A_r = lam[keep], A[:, keep]
    right = (Z.T @ A_r) / np.sqrt(N * lam_r)  # right singular vectors of Z
    w = right @ ((A_r.T @ Yz) / np.sqrt(N * lam_r)[:, None])  # Zᵀ (ZZᵀ)⁺ y
    # Zᵀa/σ is orthonormal only up to ε·λ_max/λ; re-orthonormalise the same span so the
    # certificate's projections are accurate to round-off.
    basis, _ = np.linalg.qr(right)
    eigenvalues = np.concatenate([np.zeros(n - r), lam])
    return Block(columns, eigenvalues, basis, cutoff, samples, True), w


def solve_gram(G: np.ndarray, XtY: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Min-norm solution of G w = XᵀY for one block's normalised Gram G = XᵀX/N: every
    eigenvalue, the kept eigenvectors, the cut-off and w (one step of iterative
    refinement). The single-process and the sharded fit (distributed.py) both solve here."""
    lam, U = np.linalg.eigh(G)
    cutoff = cutoff_for(lam)
    keep = lam > cutoff
    lam_r, U_r = lam[keep], U[:, keep]

    def pinv(rhs: np.ndarray) -> np.ndarray:
        return U_r @ ((U_r.T @ rhs) / lam_r[:, None])

    w = pinv(XtY)
    w += pinv(XtY - G @ w)
    return lam, U_r, cutoff, w


def row_batches(
    local_row: np.ndarray, cols: np.ndarray, vals: np.ndarray, m: int, n: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Dense row batches (first row, X) of a block of m rows × n columns, entries sorted by
    row, each batch at most BATCH_ENTRIES numbers."""
    batch = max(1, BATCH_ENTRIES // max(n, 1))
    for first in range(0, m, batch):
        last = min(first + batch, m)
        lo, hi = np.searchsorted(local_row, [first, last])
        X = np.zeros((last - first, n), dtype=np.float64)
        X[local_row[lo:hi] - first, cols[lo:hi]] = vals[lo:hi]
        yield first, X


def mhla_outputs(
    V: np.ndarray, Q: np.ndarray, sequences: Sequence[np.ndarray], budget: int = 1 << 23
) -> list[np.ndarray]:
    """Outputs (T, d_out) of heads V, Q on every sequence: float64, scale 1, no normalising.

    The runtime's chunked form in float64 (`lat.runtime.forms.mhla_chunked`, weights
    "fp64": the state and every product stay float64). Sequences are sorted by length and
    run in zero-padded batches of about `budget` token·width entries (padding at the end
    cannot change earlier outputs: the model is causal).
    """
    from lat.runtime.forms import mhla_chunked

    Vt = torch.from_numpy(np.ascontiguousarray(V, dtype=np.float64))
    Qt = torch.from_numpy(np.ascontiguousarray(Q, dtype=np.float64))
    H, d_out, d = Vt.shape
    lengths = np.array([s.shape[0] for s in sequences], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    out: list[np.ndarray] = [np.zeros((0, d_out))] * len(sequences)
    i = 0
    while i < len(order) and lengths[order[i]] > 0:
        T = int(lengths[order[i]])
        count = max(1, budget // (T * (H * d + d + d_out)))
        chosen = order[i : i + count]
        Z = torch.zeros(chosen.size, T, d, dtype=torch.float64)
        for row, j in enumerate(chosen):
            Z[row, : lengths[j]] = torch.from_numpy(np.asarray(sequences[j], np.float64))
        with torch.no_grad():
            Y = mhla_chunked(Z, Vt, Qt, weights="fp64")
        for row, j in enumerate(chosen):
            out[j] = Y[row, : lengths[j]].numpy().copy()
        i += chosen.size
    return out
