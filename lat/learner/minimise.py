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

Search: alternating least squares on the factors (alternating.py), for r = 1, 2, … heads
in turn, minimising Σ_b ‖Π_b (p_b(Θ) − p̂_b)‖². A fit with more heads than the search tries
(machines: hundreds) takes the sparse gauge instead (gauge.py, `minimise_fit`).

A head count r is accepted when max |Π(p(Θ) − p̂)| ≤ rtol · max |Π p̂|. ALS is local: the
result is an upper bound on the minimum (a failed r proves nothing), and `fit` keeps the
minimised heads only when they are fewer and reproduce the training outputs.

Memory: the projectors and each head count's normal systems are estimated from the shapes
first (`projector_bytes`, `search_bytes`) against the memory budget in force (budget.py):
the search does not start, or tries only the head counts that fit (noted on the budget).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from lat.learner.alternating import Alternating, Constraints, Sweeps, constraints
from lat.learner.budget import format_bytes, in_force_room, note, reserve
from lat.learner.features import Coefficients
from lat.learner.gauge import sparse_heads
from lat.learner.heads import head_bytes, head_count, recover_heads, train_error
from lat.runtime.device import single_thread
from lat.runtime.storage import stored_sparse

if TYPE_CHECKING:  # solve.py imports this module
    from lat.learner.solve import Fit

# Accept a head set whose projected coefficients match to this × scale: 1000× below the
# certificate's realizability threshold (1e-6), and above the floor ALS reaches on nearly
# minimal (designed) data, where the normal equations square a condition number of ~1e5
# (a 25-state automaton's designed set floors at 7e-11).
MINIMISE_RTOL = 1e-9
MINIMISE_ITERATIONS = 300  # alternating sweeps per start
MINIMISE_MAX_HEADS = 16  # largest head count tried (ascending from 1)
MINIMISE_STARTS = 6  # starts per head count: Algorithm 1's heads merged, then random factors
MINIMISE_SECONDS = 60.0  # wall-clock budget of one search; None is returned past it
# alternating sweeps of one search, all starts together: the deterministic limit (the same
# result on a busy machine as on an idle one, where the wall clock does not end it first)
MINIMISE_SWEEPS = 3000
# minimise_fit keeps fewer heads only when they reproduce every training output to this
# × max(1, max|y|) (or as well as Algorithm 1's heads did): 100× below the certificate's
# realizability threshold, so minimising can never cost a certificate.
MINIMAL_HEADS_RTOL = 1e-8
GAUGE_MIN_HEADS = 16  # the sparse gauge runs on fits with more heads than the search tries
GAUGE_SECONDS = 240.0  # the gauge's own wall-clock budget (the copy machine: ~2 min)
# The alternating search starts from Algorithm 1's heads merged where laying them out costs
# at most this (a random 64-state automaton: 61 heads → 1 from them, none from the gauge's
# 18), and from the gauge's heads beyond it (the copy machine: 1,426 heads, 1.7 GB).
ALGORITHM1_START_BYTES = 256 << 20

__all__ = ["MINIMAL_HEADS_RTOL", "MINIMISE_MAX_HEADS", "MINIMISE_RTOL", "MINIMISE_SWEEPS",
           "Constraints",
           "constraints", "fewer_heads", "minimise_fit", "minimise_heads", "projector_bytes",
           "search_bytes"]


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
    sweeps: int | None = MINIMISE_SWEEPS,
    log: dict[str, object] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The fewest heads (V (H, d_out, d), Q (H, d, d)) found that meet the constraints.

    `coefficients`: a `Coefficients` or a dense (F, d_out) array; `support` restricts a
    dense array to those columns (the rest are free). `blocks` (+ `support_block`,
    `support_position`, from a `Fit`) add the data's null space to the freedom (module
    docstring). Tries r = 1 … max_heads, `starts` starts each (the first: `initial`, a
    known head set such as Algorithm 1's, merged into r heads; the others random), until
    one start meets rtol; None when none did within `iterations` sweeps per start, the
    `sweeps` budget (all starts together; deterministic) and the `seconds` budget (the
    safety net a busy machine reaches sooner). `log`, when given, gets the sweeps run and
    which of these ended the search.
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
        als = Alternating(problem)
        max_heads = _affordable_heads(als, max_heads)
        return _search(als, initial, max_heads, iterations, rtol * scale, seed, starts,
                       seconds, Sweeps(sweeps), {} if log is None else log)


def projector_bytes(shapes: Sequence[tuple[int, int]]) -> int:
    """Peak bytes of `constraints`' projectors for blocks whose bases have these (size,
    rank) shapes: where the null space is the smaller side a complete QR (size × size,
    kept, with R and LAPACK's copy) is built; otherwise the basis itself is used."""
    return 8 * sum(3 * size * size for size, rank in shapes if rank < size <= 2 * rank)


def search_bytes(als: Alternating, r: int) -> int:
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


def _affordable_heads(als: Alternating, max_heads: int) -> int:
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


def _search(als: Alternating, initial: tuple[np.ndarray, np.ndarray] | None,
            max_heads: int, iterations: int, tol: float, seed: int, starts: int,
            seconds: float, sweeps: Sweeps, log: dict[str, object]
            ) -> tuple[np.ndarray, np.ndarray] | None:
    """The search; `log` gets the sweeps run and how it ended ("found", "sweep budget",
    "time budget" — the one a busy machine can change — or "tried every start")."""
    d, d_out = als.problem.d, als.problem.d_out
    rng = np.random.default_rng(seed)
    deadline = time.perf_counter() + seconds
    found, ended = None, "tried every start"
    for r in range(1, max_heads + 1):
        for start in range(starts):
            if start == 0 and initial is not None:
                V, Q = _merged(initial, r)
            else:
                V, Q = rng.standard_normal((r, d_out, d)), rng.standard_normal((r, d, d))
            found = als.run(V, Q, iterations, tol, deadline, sweeps)
            if found is not None:
                ended = "found"
            elif sweeps.exhausted:
                ended = "sweep budget"
            elif time.perf_counter() > deadline:
                ended = "time budget"
            else:
                continue
            break
        if ended != "tried every start":
            break
    log.update(sweeps=sweeps.used, ended=ended)
    return found


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


# ---- on a fit: the gauge, the search, the check of the training outputs ------------------

def minimise_fit(fitted: Fit, training: Callable[[], tuple[np.ndarray, ...]],
                 seconds_limit: float | None = None, groups: np.ndarray | None = None) -> Fit:
    """The fewest heads for `fitted`, kept only when they reproduce every training output
    (`training()` gives its features and outputs, built only then) to MINIMAL_HEADS_RTOL ×
    max(1, max|y|), or as well as Algorithm 1's heads did.

    Where `groups` are given and Algorithm 1's heads exceed what the alternating search
    tries (machines), the sparse gauge (gauge.py) runs first, under its own GAUGE_SECONDS
    (or the caller's `seconds_limit`), then the search — for a quarter of its budget where
    the gauge has at most MINIMISE_MAX_HEADS heads, else for all of it — from
    Algorithm 1's heads merged where they are cheap to lay out (ALGORITHM1_START_BYTES),
    else from the gauge's (on the 5-state increment machine it finds nothing in that time;
    the gauge's 6 heads, the compiled count, stand against Algorithm 1's 515). Of the
    candidates the fewest heads win, then the smaller artifact (dense search heads against
    sparse gauge heads).

    A fit made without heads (`fit(heads=False)`) gets Algorithm 1's only where they are
    needed: as the search's start (no gauge candidate, or cheap to lay out) and as the
    result when no candidate passes. Their count is known without them (`head_count`), so
    a machine whose gauge succeeds never holds Algorithm 1's hundreds of dense heads.
    `head_search` on the result records what was tried, and what ended the search."""
    seconds = dict(fitted.seconds)
    limit = MINIMISE_SECONDS if seconds_limit is None else min(seconds_limit, MINIMISE_SECONDS)
    clock = time.perf_counter()
    known = fitted.heads > 0  # else fit(heads=False): Algorithm 1's heads not laid out yet
    algorithm1 = (fitted.heads_before_minimising or fitted.heads if known
                  else head_count(fitted.coefficients, fitted.support))
    fitted = replace(fitted, heads_before_minimising=algorithm1)
    candidates = []
    search: dict[str, object] = {"algorithm1_heads": algorithm1, "gauge": None,
                                 "alternating": None, "kept": "algorithm 1"}
    if groups is not None and algorithm1 > GAUGE_MIN_HEADS and limit > 0:
        gauge_limit = GAUGE_SECONDS if seconds_limit is None else min(seconds_limit,
                                                                      GAUGE_SECONDS)
        gauge = sparse_heads(fitted.coefficients, fitted.blocks, fitted.support_block,
                             fitted.support_position, groups, deadline=clock + gauge_limit)
        if gauge is not None and gauge.heads < algorithm1:
            candidates.append((gauge.V, gauge.Q))
        spent = time.perf_counter() - clock
        search["gauge"] = {"heads": gauge.heads if gauge else None, "seconds": spent,
                           "complete": gauge.complete if gauge else False,
                           "pattern": gauge.pattern if gauge else None}
        # a short try for fewer where the gauge has no more heads than the search tries;
        # its whole budget where it has more (a 64-state automaton: 18, where the search
        # finds 1 in 17 sweeps, 26 s)
        few = gauge is not None and gauge.heads <= MINIMISE_MAX_HEADS
        limit = min(MINIMISE_SECONDS / 4 if few else limit,
                    limit if seconds_limit is None else seconds_limit - spent)
    d, d_out = fitted.coefficients.d, fitted.coefficients.d_out
    below = candidates[0][0].shape[0] if candidates else algorithm1  # the search's target
    if fitted.heads == 0 and (not candidates or below > 1 and head_bytes(
            algorithm1, d, d_out) <= ALGORITHM1_START_BYTES):
        fitted = _with_algorithm1(fitted)  # the search's start (and the fallback)
    start = (fitted.V, fitted.Q) if fitted.heads else candidates[0]
    started, log = time.perf_counter(), {}
    found = fewer_heads(fitted.coefficients, fitted.blocks, fitted.support_block,
                        fitted.support_position, *start, limit, log, below=below)
    if log:  # it ran
        search["alternating"] = {"heads": None if found is None else int(found[0].shape[0]),
                                 "seconds": time.perf_counter() - started,
                                 "from": "gauge" if start[0] is not fitted.V
                                 else "algorithm 1", **log}
    candidates += [found] if found is not None else []
    seconds["heads"] = seconds.get("heads", 0.0) + time.perf_counter() - clock
    if not candidates and known:
        return replace(fitted, seconds=seconds, head_search=search)
    clock = time.perf_counter()
    rows, cols, vals, Y = training()
    # Algorithm 1's error, or before heads the coefficients' (the same up to recovery)
    allowed = max(fitted.train_max_abs_error, MINIMAL_HEADS_RTOL * max(1.0, fitted.output_scale))
    kept = None  # unless fewer heads give the same outputs
    for V, Q in sorted(candidates, key=lambda c: (c[0].shape[0], _artifact_bytes(*c))):
        error = train_error(V, Q, fitted.support, rows, cols, vals, Y)
        if error <= allowed:
            kept = replace(fitted, V=V, Q=Q, train_max_abs_error=error)
            search["kept"] = "alternating" if found is not None and V is found[0] else "gauge"
            break
    if kept is None and not known:  # Algorithm 1's heads after all, and their error
        fitted = _with_algorithm1(fitted) if fitted.heads == 0 else fitted
        kept = replace(fitted, train_max_abs_error=train_error(
            fitted.V, fitted.Q, fitted.support, rows, cols, vals, Y))
    seconds["train_check"] = seconds.get("train_check", 0.0) + time.perf_counter() - clock
    return replace(kept or fitted, seconds=seconds, head_search=search)


def _with_algorithm1(fitted: Fit) -> Fit:
    """`fitted` with Algorithm 1's heads, packed on its support (heads.py)."""
    coefficients = fitted.coefficients
    V, Q = recover_heads(coefficients, coefficients.d, coefficients.d_out,
                         support=fitted.support)
    return replace(fitted, V=V, Q=Q, heads_before_minimising=int(V.shape[0]))


def _artifact_bytes(V: np.ndarray, Q: np.ndarray) -> int:
    """Bytes V and Q take in an artifact: storage.py keeps a mostly-zero tensor as indices
    and values (about 12 bytes a nonzero in float64)."""
    return sum(12 * int(np.count_nonzero(t)) if stored_sparse(torch.from_numpy(t)) else t.nbytes
               for t in (np.ascontiguousarray(V), np.ascontiguousarray(Q)))


def fewer_heads(coefficients: Coefficients, blocks: Sequence | None,
                support_block: np.ndarray | None, support_position: np.ndarray | None,
                V: np.ndarray, Q: np.ndarray, seconds: float | None = None,
                log: dict[str, object] | None = None, below: int | None = None
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Fewer heads than (V, Q) — than `below` when given (a candidate found already) —
    with the same outputs on the training span, or None."""
    below = V.shape[0] if below is None else min(below, V.shape[0])
    if below <= 1 or (seconds is not None and seconds <= 0):
        return None
    limit = {} if seconds is None else {"seconds": min(seconds, MINIMISE_SECONDS)}
    found = minimise_heads(coefficients, coefficients.d, coefficients.d_out, blocks=blocks,
                           support_block=support_block, support_position=support_position,
                           max_heads=min(below - 1, MINIMISE_MAX_HEADS), initial=(V, Q),
                           log=log, **limit)
    return found if found is not None and found[0].shape[0] < below else None
