"""The alternating least-squares engine of the fewest-heads search (docs/ARCHITECTURE.md,
"The learner"): the constraints a head set must meet and one start of the search.

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

`Constraints` says what must be reproduced: Π_b (p(Θ) − p̂) = 0 on every block b
(minimise.py says why); `Alternating` holds the sparse structure of p(Θ) on the support
and runs one start.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from lat.learner.features import Coefficients, block_layout, column_labels, oriented_entries

STALL_STEPS, STALL_FACTOR = 25, 0.5  # abandon a start when 25 sweeps do not halve the residual
PLATEAU_STEPS, PLATEAU_FACTOR = 5, 0.9  # … or when 5 sweeps gain less than 10 % together
POLISH_STEPS = 40  # sweeps past acceptance, towards the round-off floor
GRAM_CACHE_ENTRIES = 1 << 22  # a projector block's entry Gram is kept up to this size
RIDGE = 1e-13  # relative ridge of every normal solve (× the largest diagonal entry)

__all__ = ["Alternating", "Constraints", "Sweeps", "constraints"]


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


@dataclass
class Sweeps:
    """A budget of alternating sweeps shared by every start of one search: unlike the
    wall clock it ends a search at the same point on a busy machine as on an idle one."""

    limit: int | None
    used: int = 0

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit


class Alternating:
    """The sparse structure of p(Θ) on the support, shared by every start and head count.

    Support row i with triple (j, k, l) holds entries e: (m_e, qk_e, ql_e) = (j, k, l) and,
    when j ≠ k, (k, j, l); p[i, a] = Σ_e Σ_h V[h, a, m_e] · Q[h, qk_e, ql_e]. An *expanded*
    entry x = h·E + e is entry e of head h; both steps' unknowns are indexed per x.
    """

    def __init__(self, problem: Constraints) -> None:
        self.problem = problem
        d = problem.d
        self.entry_row, self.m, self.qk, self.ql = oriented_entries(d, problem.columns)
        n = self.n = problem.columns.size
        off = self.entry_row[n:]
        self.E = self.entry_row.size
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
        self._grams: dict[int, np.ndarray] = {}
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
            deadline: float, sweeps: Sweeps | None = None
            ) -> tuple[np.ndarray, np.ndarray] | None:
        r = V.shape[0]
        history: list[float] = []
        sweeps = sweeps or Sweeps(None)
        for _ in range(iterations):
            if sweeps.exhausted:
                return None
            sweeps.used += 1
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
    def _normal(self, unknown: np.ndarray, pair_weight, add, add_block) -> None:
        """Σ_b Bᵀ Π_b B for a step whose expanded entry x multiplies unknown[x].

        `pair_weight(xa, xb)` is the inner product over outputs of the coefficient rows of
        expanded entries xa and xb; `add(ui, uj, weights)` accumulates into the normal
        matrices, `add_block(u, matrix)` adds a dense matrix over distinct unknowns u. Rows
        whose Π contains I contribute their own entry pairs; projector blocks add
        sign · (W Wᵀ)[pos, pos'] · pair_weight over all their entry pairs, summed per
        unknown before they are added.
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
        for index, entries in enumerate(e for e, _, _ in self.projector_blocks):
            xs = (np.arange(r)[:, None] * self.E + entries[None, :]).ravel()
            gram = self._projector_gram(index)
            weights = np.tile(gram, (r, r)) * pair_weight(xs[:, None], xs[None, :])
            # entries sharing an unknown are summed first: one dense add per block
            u = unknown[xs]
            order = np.argsort(u, kind="stable")
            first = np.flatnonzero(np.r_[True, u[order][1:] != u[order][:-1]])
            summed = np.add.reduceat(np.add.reduceat(weights[order][:, order], first, axis=0),
                                     first, axis=1)
            add_block(u[order][first], summed)

    def _projector_gram(self, index: int) -> np.ndarray:
        """sign · (W Wᵀ)[pos, pos'] over projector block `index`'s entries (kept when small:
        it does not depend on the heads)."""
        if index in self._grams:
            return self._grams[index]
        entries, W, sign = self.projector_blocks[index]
        rows = torch.from_numpy(np.ascontiguousarray(W[self.entry_position[entries]]))
        gram = sign * (rows @ rows.T).numpy()
        if entries.size ** 2 <= GRAM_CACHE_ENTRIES:
            self._grams[index] = gram
        return gram

    # ---- V-step: Q fixed, one system for all outputs -------------------------------------
    def v_step(self, Q: np.ndarray, r: int) -> np.ndarray:
        d, d_out = self.problem.d, self.problem.d_out
        size = r * d
        coef = Q[:, self.qk, self.ql].ravel()  # expanded entry x → Q[h, qk_e, ql_e]
        unknown = (np.arange(r)[:, None] * d + self.m[None, :]).ravel()  # → V[h, :, m_e]
        N = np.zeros(size * size)

        def add(ui, uj, weights):
            N[:] += np.bincount(ui * size + uj, weights=weights, minlength=size * size)

        def add_block(u, matrix):
            square = N.reshape(size, size)
            square[np.ix_(u, u)] += matrix

        self._normal(unknown, lambda xa, xb: coef[xa] * coef[xb], add, add_block)
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

        def add_block(u, matrix):  # a projector block lies in one component
            c = component[u[0]]
            size = bounds[c + 1] - bounds[c]
            square = normals[c].reshape(size, size)
            square[np.ix_(local[u], local[u])] += matrix

        self._normal(unknown, lambda xa, xb: gram[value_row[xa], value_row[xb]], add,
                     add_block)
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
