"""A sparse gauge: among the coefficients with the same training outputs, a sparse one
whose heads are few (docs/ARCHITECTURE.md, "The learner").

Every p with Π_b (p − p̂_b) = 0 on every block b gives the same output on every training
prefix and on every input the certificate covers (minimise.py). Algorithm 1's p̂ is the
minimum-norm member of that set, which spreads over every linear relation of one-hot
features (a tape cell's symbols sum to one, so a constant moves freely between cells), and
its heads follow: 515 heads for a 5-state binary-increment machine whose compiled model
has 6. This pass picks a sparse member instead, by a sequence of small feasibility checks —
does some p, zero outside the rows still allowed, meet the block's constraints? (one
least-squares solve on that block's span basis, rank × allowed rows):

1. **Field pattern.** A token's coordinates fall into the Interface's fields. A head whose
   value map reads the fields 𝒱 and whose query map pairs (key field, query field) in 𝒬
   has coefficients only on triples 𝒱 × 𝒬. The (unordered field pair, query field)
   triples the training outputs do not need are dropped, most rows first; then each
   orientation of the kept pairs (which field the value map reads) is a variant.
2. **Query columns.** Inside a variant's pattern, the query columns (k, l) of W are
   dropped one at a time (fewest entries first) while every block stays feasible; then a
   column of W's busiest block moves to another key k′ where that keeps them feasible.
3. **Heads.** The sparse p is lifted to W along its orientation (a row with both
   orientations allowed is split evenly), and heads come from W's blocks, packed where
   cross terms fall off the support (heads.py); a block of full column rank becomes heads
   as its own columns, so the heads are as sparse as W.

The variant with the fewest heads is returned. Greedy elimination is a heuristic: the head
count is an upper bound on the minimum, never a claim about it; the caller keeps the heads
only when they reproduce the training outputs (minimise.py). Measured on that machine: 6
heads, the compiled count, in ~10 s; a 17 KB artifact against the compiled 18 KB.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from lat.learner.budget import reserve
from lat.learner.features import Coefficients, column_labels, feature_triples, oriented_entries
from lat.learner.heads import ZERO_RTOL, heads_from_entries
from lat.runtime.interface import Interface

GAUGE_RTOL = 1e-9  # a block is feasible when its constraint residual ≤ this × max |Uᵀp̂|
NULL_EIG = 1e-13  # eigenvalues of U[allowed]ᵀU[allowed] at round-off (‖U‖ ≤ 1): zero
GROWTH = 1e3  # a feasible p may be at most this × max |p̂| (no amplified round-off)
# a drop's rows must carry ≤ this × the feasibility tolerance: hundreds of drops, each
# leaving its round-off in the constraints, stay within the tolerance together
DROP_RTOL = 1e-2
MAX_VARIANTS = 8  # orientations tried (2^pairs, in order, at most this many)

__all__ = ["GAUGE_RTOL", "Gauge", "Pattern", "coordinate_groups", "gauge_bytes", "sparse_heads"]


def coordinate_groups(interface: Interface) -> np.ndarray:
    """The token field (its index in the Interface) of every token coordinate."""
    widths = [f.width for f in interface.token_fields]
    return np.repeat(np.arange(len(widths)), widths).astype(np.int64)


@dataclass(frozen=True)
class Pattern:
    """Value fields 𝒱 and (key field, query field) pairs 𝒬 a head set may use."""

    groups: np.ndarray  # field of every token coordinate
    value_fields: frozenset[int]
    query_pairs: frozenset[tuple[int, int]]

    def allows(self, m: np.ndarray, qk: np.ndarray, ql: np.ndarray) -> np.ndarray:
        """Which entries V[:, m]·Q[qk, ql] the pattern allows."""
        fields = int(self.groups.max()) + 1  # field ids need not all occur (width 0)
        codes = [a * fields + b for a, b in self.query_pairs]
        return (np.isin(self.groups[m], list(self.value_fields))
                & np.isin(self.groups[qk] * fields + self.groups[ql], codes))

    def describe(self, names: Sequence[str] | None = None) -> str:
        name = (lambda f: names[f]) if names is not None else str
        reads = ", ".join(name(f) for f in sorted(self.value_fields))
        pairs = ", ".join(f"{name(k)}→{name(q)}" for k, q in sorted(self.query_pairs))
        return f"values read {reads}; queries pair {pairs}"


@dataclass(frozen=True)
class Gauge:
    """The fewest heads found, their pattern, and what was tried."""

    V: np.ndarray
    Q: np.ndarray
    pattern: Pattern
    complete: bool  # False: the deadline cut a variant's elimination short (still exact)

    @property
    def heads(self) -> int:
        return int(self.V.shape[0])


def gauge_bytes(shapes: Sequence[tuple[int, int]]) -> int:
    """Peak bytes of `sparse_heads` beyond the fit, for blocks whose span bases have these
    (size, rank) shapes: a copy of every basis on the support's rows, and one block's
    feasibility solve at a time (its rank² Gram and eigenvectors, and an SVD of the allowed
    rows that is at most size × rank with its square factor of the smaller side)."""
    copies = sum(size * rank for size, rank in shapes)
    solve = max((3 * rank * rank + 2 * size * rank + min(size, rank) ** 2
                 for size, rank in shapes), default=0)
    return 8 * (copies + solve)


class _Rows:
    """The support rows, their two orientations as entries, and each block's constraints."""

    def __init__(self, coefficients: Coefficients, blocks: Sequence, support_block: np.ndarray,
                 support_position: np.ndarray) -> None:
        d = coefficients.d
        self.d = d
        self.values = np.asarray(coefficients.values, dtype=np.float64)
        self.j, self.k, self.l = feature_triples(d, coefficients.columns).T
        self.n = self.j.size
        self.entry_row, self.m, self.qk, self.ql = oriented_entries(d, coefficients.columns)
        self.column = self.qk * d + self.ql  # the query column (k, l) of W of every entry
        self.block = np.asarray(support_block, dtype=np.int64)
        self.rows_of = [np.flatnonzero(self.block == b) for b in range(len(blocks))]
        self.bases = [np.asarray(item.basis, dtype=np.float64)[support_position[rows]]
                      for item, rows in zip(blocks, self.rows_of, strict=True)]
        self.targets = [basis.T @ self.values[rows]
                        for basis, rows in zip(self.bases, self.rows_of, strict=True)]
        top = max((float(np.abs(t).max()) for t in self.targets if t.size), default=0.0)
        self.tol = GAUGE_RTOL * top
        self.largest = GROWTH * float(np.abs(self.values).max()) if self.values.size else 0.0

    def free_rows(self, entries: np.ndarray) -> np.ndarray:
        free = np.zeros(self.n, dtype=bool)
        free[self.entry_row[entries]] = True
        return free

    def solve(self, free: np.ndarray, blocks: Sequence[int] | np.ndarray
              ) -> tuple[bool, dict[int, np.ndarray]]:
        """Is some p, zero off `free`, feasible on these blocks? With its minimum-norm
        values on each block's free rows.

        With A = U[free] (the free rows of the block's span basis), p = A x meets the
        constraints Aᵀp = t exactly when t lies in the range of G = AᵀA (rank × rank,
        eigenvalues in [0, 1] since U is orthonormal; ≤ NULL_EIG count as zero); a p that
        would need more than GROWTH × max |p̂| is refused, not amplified."""
        out = {}
        for b in blocks:
            rows = self.rows_of[b]
            keep = free[rows]
            target = self.targets[b]
            A = self.bases[b][keep]
            eigenvalues, vectors = np.linalg.eigh(A.T @ A)
            null = eigenvalues <= NULL_EIG
            if target.size and null.any():
                stray = vectors[:, null] @ (vectors[:, null].T @ target)
                if float(np.abs(stray).max()) > self.tol:
                    return False, out
            kept = vectors[:, ~null]
            out[b] = A @ (kept @ ((kept.T @ target) / eigenvalues[~null][:, None]))
            if out[b].size and float(np.abs(out[b]).max()) > self.largest:
                return False, out
        return True, out


def sparse_heads(coefficients: Coefficients, blocks: Sequence, support_block: np.ndarray,
                 support_position: np.ndarray, groups: np.ndarray,
                 deadline: float | None = None) -> Gauge | None:
    """The fewest heads over the pattern variants (module docstring), or None when no
    variant was built (no coefficients, or the deadline passed before the first's columns
    were dropped). A variant cut short by the deadline still gives exact heads."""
    groups = np.asarray(groups, dtype=np.int64)
    reserve("minimise", gauge_bytes([np.shape(b.basis) for b in blocks]),
            "the sparse gauge's block bases and solves")
    rows = _Rows(coefficients, blocks, support_block, support_position)
    if rows.n == 0 or not rows.targets:
        return None
    best: Gauge | None = None
    variants = _variants(rows, groups, deadline)
    # the smallest pattern first: cheapest to search, and fewer entries rarely need more heads
    allowed = [pattern.allows(rows.m, rows.qk, rows.ql) for pattern in variants]
    order = sorted(range(len(variants)), key=lambda i: int(allowed[i].sum()))
    for i in order:
        if deadline is not None and time.perf_counter() > deadline:
            break  # a pattern with nothing dropped is not worth its block solves
        entries, complete = _drop_columns(rows, allowed[i], deadline)
        entries = _balance(rows, entries, allowed[i], deadline)
        V, Q = _heads(rows, entries, coefficients)
        if best is None or V.shape[0] < best.heads:
            best = Gauge(V, Q, variants[i], complete and (best is None or best.complete))
        elif not complete:
            best = replace(best, complete=False)
    return best


def _variants(rows: _Rows, groups: np.ndarray, deadline: float | None) -> list[Pattern]:
    """Step 1: the field triples the outputs need, then one pattern per orientation."""
    fj, fk, fl = groups[rows.j], groups[rows.k], groups[rows.l]
    lo, hi = np.minimum(fj, fk), np.maximum(fj, fk)
    fields = int(groups.max()) + 1
    unit = (lo * fields + hi) * fields + fl
    free = np.ones(rows.n, dtype=bool)
    units, counts = np.unique(unit, return_counts=True)
    for u in units[np.argsort(-counts, kind="stable")]:
        if deadline is not None and time.perf_counter() > deadline:
            break
        members = unit == u
        trial = free & ~members
        feasible, _ = rows.solve(trial, np.unique(rows.block[members]))
        if feasible:
            free = trial
    kept = {(int(a), int(b), int(q)) for a, b, q in
            zip(lo[free], hi[free], fl[free], strict=True)}
    pairs = sorted({(a, b) for a, b, _ in kept if a != b})
    patterns, seen = [], set()
    for flips in itertools.islice(itertools.product((False, True), repeat=len(pairs)),
                                  MAX_VARIANTS):
        reads = dict(zip(pairs, flips, strict=True))
        value_fields, query_pairs = set(), set()
        for a, b, q in kept:
            value, key = (b, a) if a != b and reads[(a, b)] else (a, b)
            value_fields.add(value)
            query_pairs.add((key, q))
        key = (frozenset(value_fields), frozenset(query_pairs))
        if key not in seen:
            seen.add(key)
            patterns.append(Pattern(groups, *key))
    return patterns


@dataclass(frozen=True)
class _Feasible:
    """One block's feasible p on its free rows, and the null space Z of U[free]ᵀ: dropping
    rows D stays feasible exactly when some p + Zy vanishes on D (a |D| × dim Z solve), so
    a drop costs no block solve. Where U[free] has full row rank (Z empty, the usual case
    once the pattern is tight) p is unique and a drop is feasible iff p is zero on D."""

    rows: np.ndarray  # global rows, ascending
    p: np.ndarray  # (rows, d_out)
    null: np.ndarray  # (rows, dim Z)

    @staticmethod
    def start(rows: _Rows, b: int, free: np.ndarray) -> _Feasible:
        """Block `b` with the rows `free`: its minimum-norm p and null space."""
        block_rows = rows.rows_of[b]
        A = rows.bases[b][free[block_rows]]
        if A.shape[0] == 0:
            return _Feasible(block_rows[:0], np.zeros((0, rows.values.shape[1])),
                             np.zeros((0, 0)))
        left, sigma, right = np.linalg.svd(A, full_matrices=True)
        rank = int(np.count_nonzero(sigma ** 2 > NULL_EIG))
        p = left[:, :rank] @ ((right[:rank] @ rows.targets[b]) / sigma[:rank, None])
        return _Feasible(block_rows[free[block_rows]], p, left[:, rank:])

    def without(self, lost: np.ndarray, tol: float, largest: float) -> _Feasible | None:
        """This block with the global rows `lost` forced to zero, or None if infeasible."""
        at = np.searchsorted(self.rows, lost)
        keep = np.ones(self.rows.size, dtype=bool)
        keep[at] = False
        p, null = self.p, self.null
        if null.shape[1]:
            shift = np.linalg.lstsq(null[at], -p[at], rcond=None)[0]
            p = p + null @ shift
            _, sigma, right = np.linalg.svd(null[at], full_matrices=True)
            rank = int(np.count_nonzero(sigma > 1e-10))
            null = null[keep] @ right[rank:].T
        else:
            null = null[keep]
        if p[at].size and float(np.abs(p[at]).max()) > tol:
            return None
        if p.size and float(np.abs(p).max()) > largest:
            return None
        return _Feasible(self.rows[keep], p[keep], null)


class _Columns:
    """A pattern's allowed entries grouped by their query column of W."""

    def __init__(self, rows: _Rows, allowed: np.ndarray) -> None:
        candidates = np.flatnonzero(allowed)
        order = np.argsort(rows.column[candidates], kind="stable")
        self.entries = candidates[order]
        self.names, self.starts, self.counts = np.unique(
            rows.column[self.entries], return_index=True, return_counts=True)

    def members(self, at: int) -> np.ndarray:
        """The allowed entries of the `at`-th column."""
        return self.entries[self.starts[at]: self.starts[at] + self.counts[at]]

    def of(self, column: int) -> np.ndarray:
        """The allowed entries of query column `column` (none where it is not allowed)."""
        at = int(np.searchsorted(self.names, column))
        if at == self.names.size or self.names[at] != column:
            return np.zeros(0, dtype=np.int64)
        return self.members(at)


def _drop_columns(rows: _Rows, allowed: np.ndarray, deadline: float | None
                  ) -> tuple[np.ndarray, bool]:
    """Step 2: drop query columns (k, l) while every block stays feasible."""
    entries = allowed.copy()
    columns = _Columns(rows, allowed)
    left = np.bincount(rows.entry_row[columns.entries], minlength=rows.n)  # entries per row
    free = left > 0
    blocks = {b: _Feasible.start(rows, b, free) for b in range(len(rows.rows_of))}
    for c in np.argsort(columns.counts, kind="stable"):
        if deadline is not None and time.perf_counter() > deadline:
            return entries, False
        members = columns.members(int(c))
        touched, per_row = np.unique(rows.entry_row[members], return_counts=True)
        lost = touched[left[touched] == per_row]  # rows left with no entry
        trial = {}
        for b in np.unique(rows.block[lost]):
            reduced = blocks[b].without(lost[rows.block[lost] == b], DROP_RTOL * rows.tol,
                                        rows.largest)
            if reduced is None:
                break
            trial[b] = reduced
        else:
            entries[members] = False
            left[touched] -= per_row
            blocks.update(trial)
    return entries, True


def _balance(rows: _Rows, entries: np.ndarray, allowed: np.ndarray, deadline: float | None,
             rounds: int = 64) -> np.ndarray:
    """Step 2b: move query columns out of the busiest block of W.

    Heads are shared across W's blocks (query columns linked through a common value
    coordinate), so their count is set by the busiest block, whose rank is at most its
    columns. A column (k, l) of the busiest block may move to another key k′ — its allowed
    but dropped column (k′, l) restored in its place — when the constraints still hold and
    the block k′ belongs to stays below the busiest."""
    d = rows.d
    allowed_columns = _Columns(rows, allowed)
    for _ in range(rounds):
        if deadline is not None and time.perf_counter() > deadline:
            break
        chosen = np.flatnonzero(entries)
        columns, column_of = np.unique(rows.column[chosen], return_inverse=True)
        block = column_labels(rows.m[chosen], column_of, columns.size)
        load = np.bincount(block)
        key_load = np.zeros(d, dtype=np.int64)
        np.maximum.at(key_load, columns // d, load[block])
        busiest = int(np.argmax(load))
        moved = False
        for column in columns[block == busiest]:
            key, query = divmod(int(column), d)
            here = allowed_columns.of(int(column))
            here = here[entries[here]]
            for other in np.argsort(key_load, kind="stable"):
                if key_load[other] + 1 >= load[busiest]:
                    break
                there = allowed_columns.of(int(other) * d + query)
                there = there[~entries[there]]
                if not there.size:
                    continue
                trial = entries.copy()
                trial[here], trial[there] = False, True
                touched = np.unique(rows.block[rows.entry_row[np.r_[here, there]]])
                if rows.solve(rows.free_rows(trial), touched)[0]:
                    entries, moved = trial, True
                    break
            if moved:
                break
        if not moved:
            break
    return entries


def _heads(rows: _Rows, entries: np.ndarray, coefficients: Coefficients
           ) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: the sparse p on the allowed rows, lifted along its entries, to heads."""
    free = rows.free_rows(entries)
    feasible, solved = rows.solve(free, range(len(rows.rows_of)))
    if not feasible:  # cannot happen after the checks above; refuse rather than mislead
        raise AssertionError("the sparse gauge lost feasibility")
    p = np.zeros_like(rows.values)
    for b, x in solved.items():
        block_rows = rows.rows_of[b]
        p[block_rows[free[block_rows]]] = x
    chosen = np.flatnonzero(entries)
    share = 1.0 / np.bincount(rows.entry_row[chosen], minlength=rows.n)[rows.entry_row[chosen]]
    values = p[rows.entry_row[chosen]] * share[:, None]  # (entries, d_out)
    scale = float(np.abs(values).max()) if values.size else 0.0
    which, a = np.nonzero(np.abs(values) > ZERO_RTOL * scale)
    e = chosen[which]
    d = rows.d
    return heads_from_entries(a * d + rows.m[e], rows.column[e],
                              values[which, a], d, coefficients.d_out,
                              support=coefficients.columns, columns=True)
