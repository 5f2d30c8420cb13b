"""Minimal heads: the fewest heads that compute the learned function.

Algorithm 1 returns rank(W) heads, where W is *one* matrix whose symmetrisation gives the
fitted coefficients p̂ (heads.py). But every head set Θ with the same outputs on the data
is an equally good minimiser, and three kinds of freedom leave room for far fewer heads:

1. the part of W antisymmetric in (j, k): p(Θ) only sees W[(a,j),(k,l)] + W[(a,k),(j,l)];
2. coefficients of features off the support (never nonzero in the training data);
3. coefficients along the null space of the data inside the support: one-hot programs
   have exact linear relations among their features (e.g. flow conservation of an
   automaton's state counts), so many p give the same outputs on every training prefix.

This pass searches that whole affine set for a low-rank member. With Π_b the orthogonal
projector onto the span of block b's training features (solve.py's `Block.basis`), the
outputs on every training prefix are unchanged exactly when

    Π_b (p_b(Θ) − p̂_b) = 0   for every block b,

and this is also the condition under which the certificate's claim carries over: the
certified inputs have features in that span, so every head set meeting it computes the
same function there (Corollary A.4 restricted to the span). Without blocks every support
column must match exactly (freedoms 1 and 2 only).

Search: alternating least squares on the factors, for r = 1, 2, … heads in turn, minimising
Σ_b ‖Π_b (p_b(Θ) − p̂_b)‖²:

    V-step  Q fixed: p is linear in V, and every output a has the same design, so one
            (r·d × r·d) normal system with d_out right-hand sides;
    Q-step  V fixed: p is linear in the entries Q[h,k,l] the support touches; rows of the
            system couple only through a shared support row or a shared block, so the
            normal system splits into connected components solved densely.

Every normal matrix is assembled sparsely: a support row touches at most 2r unknowns, and
Π_b = I − N_bN_bᵀ (N_b the null space of the block, usually a few columns) or
Π_b = U_bU_bᵀ (when the span is the smaller side) adds a low-rank correction per block.
Solves use a tiny ridge with two refinement steps (iterated Tikhonov), so rank-deficient
systems (unknowns no equation touches, the V↔Q scale of each head) get the small solution
rather than a failure. After each sweep every head is rebalanced (‖V_h‖ = ‖Q_h‖).

A head count r is accepted when max |Π(p(Θ) − p̂)| ≤ rtol · max |Π p̂|. ALS is local: the
result is an upper bound on the minimum (a failed r proves nothing), and `fit` keeps the
minimised heads only when they are fewer and reproduce the training outputs.

Memory: the projectors and each head count's normal systems are estimated from the shapes
first (`projector_bytes`, `search_bytes`) against the memory budget in force (budget.py):
the search does not start, or tries only the head counts that fit (noted on the budget).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from lat.learner.budget import format_bytes, in_force_room, note, reserve
from lat.learner.features import Coefficients, block_layout, column_labels, feature_triples
from lat.runtime.device import single_thread

# Accept a head set whose projected coefficients match to this × scale: 1000× below the
# certificate's realizability threshold (1e-6), and above the floor ALS reaches on nearly
# minimal (designed) data, where the normal equations square a condition number of ~1e5
# (a 25-state automaton's designed set floors at 7e-11).
MINIMISE_RTOL = 1e-9
MINIMISE_ITERATIONS = 300  # alternating sweeps per start
MINIMISE_MAX_HEADS = 16  # largest head count tried (ascending from 1)
MINIMISE_STARTS = 6  # starts per head count: Algorithm 1's heads merged, then random factors
MINIMISE_SECONDS = 60.0  # wall-clock budget of one search; None is returned past it
STALL_STEPS, STALL_FACTOR = 25, 0.5  # abandon a start when 25 sweeps do not halve the residual
PLATEAU_STEPS, PLATEAU_FACTOR = 5, 0.9  # … or when 5 sweeps gain less than 10 % together
POLISH_STEPS = 40  # sweeps past acceptance, towards the round-off floor
RIDGE = 1e-13  # relative ridge of every normal solve (× the largest diagonal entry)

__all__ = ["MINIMISE_MAX_HEADS", "MINIMISE_RTOL", "Constraints", "constraints",
           "minimise_heads", "projector_bytes", "search_bytes"]


@dataclass(frozen=True)
class Constraints:
    """What a head set must reproduce: Π_b (p(Θ) − p̂) = 0 on every block.

    Rows are support columns (reduced features) with triples (j, k, l). `block` numbers
    each row's block, `position` its place in the block's basis; `projectors[b]` is
    (W, sign): sign −1 means Π = I − WWᵀ (W spans the null space; an empty W means Π = I),
    sign +1 means Π = WWᵀ. `target` is Π p̂ (rows × d_out).
    """

    d: int
    d_out: int
    columns: np.ndarray
    target: np.ndarray
    block: np.ndarray
    position: np.ndarray
    projectors: tuple[tuple[np.ndarray, int], ...]

    @cached_property
    def rows_of_block(self) -> list[np.ndarray]:
        """The rows of every block, ascending (computed once: `project` runs every sweep)."""
        order, bounds, _ = block_layout(self.block)
        return [order[bounds[b]: bounds[b + 1]] for b in range(len(self.projectors))]

    def project(self, values: np.ndarray) -> np.ndarray:
        """Π applied blockwise to (rows × d_out) values."""
        out = values.copy()
        for (W, sign), rows in zip(self.projectors, self.rows_of_block, strict=True):
            if W.shape[1] == 0:
                continue
            Wr = torch.from_numpy(np.ascontiguousarray(W[self.position[rows]]))
            part = (Wr @ (Wr.T @ torch.from_numpy(values[rows]))).numpy()
            out[rows] = part if sign > 0 else values[rows] - part
        return out


def constraints(coefficients: Coefficients, blocks: Sequence | None = None,
                support_block: np.ndarray | None = None,
                support_position: np.ndarray | None = None) -> Constraints:
    """Constraints from fitted coefficients and (optionally) the fit's blocks.

    `blocks` are solve.py `Block`s (their `basis` spans the block's training features)
    with the fit's `support_block`/`support_position`; without them every support column
    is its own block with Π = I.
    """
    n = coefficients.columns.size
    values = np.asarray(coefficients.values, dtype=np.float64)
    if blocks is None:
        block = np.arange(n, dtype=np.int64)
        position = np.zeros(n, dtype=np.int64)
        empty = np.zeros((1, 0))
        projectors = tuple((empty, -1) for _ in range(n))
    else:
        block = np.asarray(support_block, dtype=np.int64)
        position = np.asarray(support_position, dtype=np.int64)
        projectors = []
        for item in blocks:
            basis = np.asarray(item.basis, dtype=np.float64)
            size, rank = basis.shape
            if 2 * rank >= size:  # the null space is the smaller side
                if rank == size:
                    null = np.zeros((size, 0))
                else:
                    full, _ = torch.linalg.qr(torch.from_numpy(basis), mode="complete")
                    null = full[:, rank:].numpy()
                projectors.append((null, -1))
            else:
                projectors.append((basis, 1))
        projectors = tuple(projectors)
    made = Constraints(coefficients.d, coefficients.d_out, coefficients.columns.copy(),
                       values, block, position, projectors)
    return Constraints(made.d, made.d_out, made.columns, made.project(values), block,
                       position, projectors)


def minimise_heads(
    coefficients: Coefficients | np.ndarray,
    d: int,
    d_out: int,
    *,
    support: np.ndarray | None = None,
    blocks: Sequence | None = None,
    support_block: np.ndarray | None = None,
    support_position: np.ndarray | None = None,
    max_heads: int = MINIMISE_MAX_HEADS,
    iterations: int = MINIMISE_ITERATIONS,
    rtol: float = MINIMISE_RTOL,
    seed: int = 0,
    starts: int = MINIMISE_STARTS,
    seconds: float = MINIMISE_SECONDS,
    initial: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The fewest heads (V (H, d_out, d), Q (H, d, d)) found that meet the constraints.

    `coefficients`: a `Coefficients` or a dense (F, d_out) array; `support` restricts a
    dense array to those columns (the rest are free). `blocks` (+ `support_block`,
    `support_position`, from a `Fit`) add the data's null space to the freedom (module
    docstring). Tries r = 1 … max_heads, `starts` starts each (the first: `initial`, a
    known head set such as Algorithm 1's, merged into r heads; the others random), until
    one start meets rtol; None when none did within `iterations` sweeps per start and the
    `seconds` budget.
    """
    if not isinstance(coefficients, Coefficients):
        coefficients = Coefficients.from_dense(np.asarray(coefficients), d)
    if support is not None:
        keep = np.isin(coefficients.columns, np.asarray(support, dtype=np.int64))
        coefficients = Coefficients(d, d_out, coefficients.columns[keep],
                                    np.asarray(coefficients.values)[keep])
    if coefficients.d != d or coefficients.d_out != d_out:
        raise ValueError(f"coefficients are for d={coefficients.d}, d_out="
                         f"{coefficients.d_out}, not d={d}, d_out={d_out}")
    if blocks is not None:  # before the projectors are built
        reserve("minimise", projector_bytes([np.shape(b.basis) for b in blocks]), "projectors")
    # The systems are small (≲ 10³): one thread avoids the contention that makes
    # multi-threaded BLAS 10–50× slower when other processes share the cores.
    with single_thread():
        problem = constraints(coefficients, blocks, support_block, support_position)
        scale = float(np.abs(problem.target).max()) if problem.target.size else 0.0
        if scale == 0.0:
            return np.zeros((1, d_out, d)), np.zeros((1, d, d))
        als = _Alternating(problem)
        max_heads = _affordable_heads(als, max_heads)
        return _search(als, initial, max_heads, iterations, rtol * scale, seed, starts,
                       seconds)


def projector_bytes(shapes: Sequence[tuple[int, int]]) -> int:
    """Peak bytes of `constraints`' projectors for blocks whose bases have these (size,
    rank) shapes: where the null space is the smaller side a complete QR (size × size,
    kept, with R and LAPACK's copy) is built; otherwise the basis itself is used."""
    return 8 * sum(3 * size * size for size, rank in shapes if rank < size <= 2 * rank)


def search_bytes(als: _Alternating, r: int) -> int:
    """Peak bytes of one alternating sweep with `r` heads: the V-step's (r·d)² normal
    matrix (with its scatter, ridge copy and factor), the Q-step's per-component normals,
    a projector block's dense (r·entries)² pair arrays in `_normal`, the per-entry
    products, and the head sets in play (current, next, merged start)."""
    d, d_out = als.problem.d, als.problem.d_out
    v_normal = 5 * (r * d) ** 2
    q_normal = 4 * r * r * int((als.component_sizes.astype(np.float64) ** 2).sum())
    block = 8 * max(((r * e.size) ** 2 for e, _, _ in als.projector_blocks), default=0)
    identity = 6 * (2 * r) ** 2 * als.identity_slots.shape[0]
    entries = 4 * r * als.E * (d_out + 2)
    heads = 4 * r * d * (d_out + d)
    return 8 * (max(v_normal, q_normal, block, identity) + entries + heads)


def _affordable_heads(als: _Alternating, max_heads: int) -> int:
    """The largest head count ≤ `max_heads` whose sweeps fit the memory budget in force;
    MemoryUp when not even one head does."""
    room = in_force_room()
    if room is None:
        return max_heads
    reserve("minimise", search_bytes(als, 1), "the head search's normal systems")
    fits = max(r for r in range(1, max_heads + 1) if search_bytes(als, r) <= room)
    if fits < max_heads:
        note(f"minimise: head counts above {fits} not tried (their normal systems need "
             f"~{format_bytes(search_bytes(als, fits + 1))}, over the memory budget)")
    return fits


def _search(als: _Alternating, initial: tuple[np.ndarray, np.ndarray] | None,
            max_heads: int, iterations: int, tol: float, seed: int, starts: int,
            seconds: float) -> tuple[np.ndarray, np.ndarray] | None:
    d, d_out = als.problem.d, als.problem.d_out
    rng = np.random.default_rng(seed)
    deadline = time.perf_counter() + seconds
    for r in range(1, max_heads + 1):
        for start in range(starts):
            if start == 0 and initial is not None:
                V, Q = _merged(initial, r)
            else:
                V, Q = rng.standard_normal((r, d_out, d)), rng.standard_normal((r, d, d))
            found = als.run(V, Q, iterations, tol, deadline)
            if found is not None:
                return found
            if time.perf_counter() > deadline:
                return None
    return None


def _merged(heads: tuple[np.ndarray, np.ndarray], r: int) -> tuple[np.ndarray, np.ndarray]:
    """r heads from H: head h joins group h mod r, and each group's V and Q are summed.

    Algorithm 1's heads of one-hot programs live on disjoint blocks, so a group's sum
    keeps every block's own term and only adds cross terms for ALS to cancel."""
    V0, Q0 = heads
    V = np.zeros((r,) + V0.shape[1:])
    Q = np.zeros((r,) + Q0.shape[1:])
    for h in range(V0.shape[0]):
        V[h % r] += V0[h]
        Q[h % r] += Q0[h]
    return V, Q


class _Alternating:
    """The sparse structure of p(Θ) on the support, shared by every start and head count.

    Support row i with triple (j, k, l) holds entries e: (m_e, qk_e, ql_e) = (j, k, l) and,
    when j ≠ k, (k, j, l); p[i, a] = Σ_e Σ_h V[h, a, m_e] · Q[h, qk_e, ql_e]. An *expanded*
    entry x = h·E + e is entry e of head h; both steps' unknowns are indexed per x.
    """

    def __init__(self, problem: Constraints) -> None:
        self.problem = problem
        d = problem.d
        j, k, l = feature_triples(d, problem.columns).T
        off = np.flatnonzero(j != k)
        n = j.size
        self.n = n
        self.entry_row = np.r_[np.arange(n), off]
        self.E = self.entry_row.size
        self.m = np.r_[j, k[off]]
        self.qk = np.r_[k, j[off]]
        self.ql = np.r_[l, l[off]]
        self.entry_position = problem.position[self.entry_row]
        # entries of each row side by side: slot 0 always, slot 1 for off-diagonal rows
        slots = np.full((n, 2), -1, dtype=np.int64)
        slots[:, 0] = np.arange(n)
        slots[off, 1] = n + np.arange(off.size)
        has_identity = np.array([problem.projectors[b][1] < 0 for b in problem.block],
                                dtype=bool)
        self.identity_slots = slots[has_identity]
        # query-side unknowns: the (k, l) pairs the support touches
        self.q_pairs, self.entry_q = np.unique(self.qk * d + self.ql, return_inverse=True)
        # Q-step components: rows couple through shared (k, l) and through projectors
        with_projector = np.array([problem.projectors[b][0].shape[1] > 0
                                   for b in problem.block], dtype=bool)
        group = np.where(with_projector, problem.block, len(problem.projectors) + np.arange(n))
        self.q_component = column_labels(group[self.entry_row], self.entry_q,
                                         self.q_pairs.size)
        self.n_components = int(self.q_component.max()) + 1 if self.q_pairs.size else 0
        self.component_sizes = np.bincount(self.q_component, minlength=self.n_components)
        entry_block = problem.block[self.entry_row]
        order = np.argsort(entry_block, kind="stable")
        bounds = np.searchsorted(entry_block[order], np.arange(len(problem.projectors) + 1))
        self.projector_blocks = [
            (order[bounds[b]: bounds[b + 1]], W, sign)
            for b, (W, sign) in enumerate(problem.projectors)
            if W.shape[1] > 0 and bounds[b + 1] > bounds[b]]
        self.target_entries = torch.from_numpy(problem.target[self.entry_row])

    # ---- p(Θ) and the residual -----------------------------------------------------------
    def coefficients(self, V: np.ndarray, Q: np.ndarray) -> np.ndarray:
        per_entry = np.einsum("hae,he->ea", V[:, :, self.m], Q[:, self.qk, self.ql])
        out = torch.zeros(self.n, V.shape[1], dtype=torch.float64)
        out.index_add_(0, torch.from_numpy(self.entry_row), torch.from_numpy(per_entry))
        return out.numpy()

    def residual(self, V: np.ndarray, Q: np.ndarray) -> float:
        diff = self.coefficients(V, Q) - self.problem.target
        return float(np.abs(self.problem.project(diff)).max())

    # ---- one start -----------------------------------------------------------------------
    def run(self, V: np.ndarray, Q: np.ndarray, iterations: int, tol: float,
            deadline: float) -> tuple[np.ndarray, np.ndarray] | None:
        r = V.shape[0]
        history: list[float] = []
        for _ in range(iterations):
            V = self.v_step(Q, r)
            Q = self.q_step(V, r)
            norms_v = np.linalg.norm(V.reshape(r, -1), axis=1)
            norms_q = np.linalg.norm(Q.reshape(r, -1), axis=1)
            ratio = np.ones(r)
            fine = (norms_v > 0) & (norms_q > 0)
            ratio[fine] = np.sqrt(norms_q[fine] / norms_v[fine])
            V *= ratio[:, None, None]
            Q /= ratio[:, None, None]
            worst = self.residual(V, Q)
            history.append(worst)
            if worst <= tol:
                return self._polish(V, Q, worst)
            if len(history) > STALL_STEPS and worst > STALL_FACTOR * history[-STALL_STEPS - 1]:
                return None
            if (len(history) > PLATEAU_STEPS
                    and worst > PLATEAU_FACTOR * history[-PLATEAU_STEPS - 1]):
                return None
            if time.perf_counter() > deadline:
                return None
        return None

    def _polish(self, V: np.ndarray, Q: np.ndarray, worst: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """Accepted: keep sweeping while a sweep gains ≥ 10 % (ALS converges linearly), so
        the result sits at the round-off floor, not merely under the tolerance."""
        r = V.shape[0]
        for _ in range(POLISH_STEPS):
            V2 = self.v_step(Q, r)
            Q2 = self.q_step(V2, r)
            now = self.residual(V2, Q2)
            if not now < PLATEAU_FACTOR * worst:
                break
            V, Q, worst = V2, Q2, now
        return V, Q

    # ---- normal equations ----------------------------------------------------------------
    def _normal(self, unknown: np.ndarray, pair_weight, add) -> None:
        """Σ_b Bᵀ Π_b B for a step whose expanded entry x multiplies unknown[x].

        `pair_weight(xa, xb)` is the inner product over outputs of the coefficient rows of
        expanded entries xa and xb; `add(ui, uj, weights)` accumulates into the normal
        matrices. Rows whose Π contains I contribute their own entry pairs; projector
        blocks add sign · (W Wᵀ)[pos, pos'] · pair_weight over all their entry pairs.
        """
        r = unknown.size // self.E
        heads = np.arange(r)[None, :, None] * self.E
        slots = self.identity_slots
        if slots.shape[0]:
            present = np.repeat((slots >= 0)[:, None, :], r, axis=1).reshape(slots.shape[0], -1)
            filled = np.where(slots >= 0, slots, slots[:, :1])
            x = (heads + filled[:, None, :]).reshape(slots.shape[0], -1)  # (n', r·2)
            xa = np.broadcast_to(x[:, :, None], (x.shape[0], x.shape[1], x.shape[1]))
            xb = np.broadcast_to(x[:, None, :], xa.shape)
            both = present[:, :, None] & present[:, None, :]
            add(unknown[xa[both]], unknown[xb[both]], pair_weight(xa[both], xb[both]))
        for entries, W, sign in self.projector_blocks:
            xs = (np.arange(r)[:, None] * self.E + entries[None, :]).ravel()
            Wx = torch.from_numpy(np.ascontiguousarray(W[np.tile(self.entry_position[entries],
                                                                 r)]))
            weights = sign * (Wx @ Wx.T).numpy() * pair_weight(xs[:, None], xs[None, :])
            ui = np.broadcast_to(unknown[xs][:, None], weights.shape)
            uj = np.broadcast_to(unknown[xs][None, :], weights.shape)
            add(ui.ravel(), uj.ravel(), weights.ravel())

    # ---- V-step: Q fixed, one system for all outputs -------------------------------------
    def v_step(self, Q: np.ndarray, r: int) -> np.ndarray:
        d, d_out = self.problem.d, self.problem.d_out
        size = r * d
        coef = Q[:, self.qk, self.ql].ravel()  # expanded entry x → Q[h, qk_e, ql_e]
        unknown = (np.arange(r)[:, None] * d + self.m[None, :]).ravel()  # → V[h, :, m_e]
        N = np.zeros(size * size)

        def add(ui, uj, weights):
            N[:] += np.bincount(ui * size + uj, weights=weights, minlength=size * size)

        self._normal(unknown, lambda xa, xb: coef[xa] * coef[xb], add)
        rhs = torch.zeros(size, d_out, dtype=torch.float64)
        rhs.index_add_(0, torch.from_numpy(unknown), torch.from_numpy(coef)[:, None]
                       * self.target_entries.repeat(r, 1))
        x = _solve(N.reshape(size, size), rhs.numpy())
        return x.reshape(r, d, d_out).transpose(0, 2, 1).copy()

    # ---- Q-step: V fixed, one system per component ---------------------------------------
    def q_step(self, V: np.ndarray, r: int) -> np.ndarray:
        d = self.problem.d
        nq = self.q_pairs.size
        flat = V.transpose(0, 2, 1).reshape(r * d, -1)  # row h·d + m: V[h, :, m]
        gram = _gram(flat)  # Σ_a V[h,a,m] V[h',a,m']
        value_row = (np.arange(r)[:, None] * d + self.m[None, :]).ravel()
        unknown = (np.arange(r)[:, None] * nq + self.entry_q[None, :]).ravel()
        component = np.tile(self.q_component, r)
        order = np.argsort(component, kind="stable")
        bounds = np.searchsorted(component[order], np.arange(self.n_components + 1))
        local = np.empty(r * nq, dtype=np.int64)
        for c in range(self.n_components):
            local[order[bounds[c]: bounds[c + 1]]] = np.arange(bounds[c + 1] - bounds[c])
        normals = [np.zeros((bounds[c + 1] - bounds[c]) ** 2)
                   for c in range(self.n_components)]

        def add(ui, uj, weights):
            if ui.size == 0:
                return
            comp = component[ui]
            if comp.min() == comp.max():  # one block: one component
                size = bounds[comp[0] + 1] - bounds[comp[0]]
                normals[comp[0]] += np.bincount(local[ui] * size + local[uj], weights=weights,
                                                minlength=size * size)
                return
            by = np.argsort(comp, kind="stable")
            edges = np.searchsorted(comp[by], np.arange(self.n_components + 1))
            for c in np.unique(comp):
                take = by[edges[c]: edges[c + 1]]
                size = bounds[c + 1] - bounds[c]
                normals[c] += np.bincount(local[ui[take]] * size + local[uj[take]],
                                          weights=weights[take], minlength=size * size)

        self._normal(unknown, lambda xa, xb: gram[value_row[xa], value_row[xb]], add)
        Vm = torch.from_numpy(np.ascontiguousarray(V[:, :, self.m].transpose(0, 2, 1)))
        per_entry = (Vm * self.target_entries[None]).sum(-1).reshape(-1)  # (r·E,)
        rhs = torch.zeros(r * nq, dtype=torch.float64)
        rhs.index_add_(0, torch.from_numpy(unknown), per_entry)
        rhs = rhs.numpy()
        x = np.zeros(r * nq)
        for c in range(self.n_components):
            members = order[bounds[c]: bounds[c + 1]]
            size = members.size
            x[members] = _solve(normals[c].reshape(size, size), rhs[members][:, None])[:, 0]
        out = np.zeros((r, d, d))  # entries off the support: 0, the small choice
        k_of, l_of = np.divmod(self.q_pairs, d)
        for h in range(r):
            out[h, k_of, l_of] = x[h * nq: (h + 1) * nq]
        return out


def _gram(rows: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(rows))
    return (t @ t.T).numpy()


def _solve(N: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Ridge-regularised normal solve with two refinement steps (iterated Tikhonov).

    One Cholesky factorisation of N + μI (μ = RIDGE · max diag N) serves all three solves;
    a factorisation failure (N indefinite by round-off) falls back to least squares."""
    if N.size == 0:
        return np.zeros_like(rhs)
    top = float(np.abs(np.diag(N)).max())
    if top == 0.0:
        return np.zeros_like(rhs)
    A = torch.from_numpy(N)
    b = torch.from_numpy(np.ascontiguousarray(rhs))
    factor, info = torch.linalg.cholesky_ex(A + RIDGE * top * torch.eye(A.shape[0],
                                                                        dtype=A.dtype))
    if int(info) != 0:
        return torch.linalg.lstsq(A, b, driver="gelsd").solution.numpy()
    x = torch.cholesky_solve(b, factor)
    for _ in range(2):
        x += torch.cholesky_solve(b - A @ x, factor)
    return x.numpy()
