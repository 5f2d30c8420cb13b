"""One sequence, stepped in plain Python and numpy: the coordinate decoder without torch's
per-op overhead.

A batched step through torch costs ~60 small ops (tens of µs each on a shared CPU), which is
what a single run pays per token. For one sequence on the CPU, `run_single` does the same
decode with Python integers and a handful of numpy ops per token:

- a token is a tuple of codes (`tokens.Tokens`' codes); its state update
  Nᵀ += Σ_h (Q_hᵀ z)(V_h z)ᵀ touches only the rows its codes name through Q, and is the
  same matrix every time the token recurs, so it is computed once per distinct token
  (from the decoder's own tables, in the state format) and then added: ``N[rows] += Δ``;
- the output is the signed sum of the state rows the codes name, decoded block by block
  (argmax, top-1 minus top-2) exactly as `tokens.Decode` does, ties to the lowest index;
- with `history=False` nothing per position is kept (decoded values of the last position,
  the smallest margin and whether every margin resolved): memory does not grow with the
  input.

Sparse weights (`forms.sparse.SparseDecoder`) run the same way: a token's value and Q rows
are read off the decoder's per-code tables, and the state keeps only the rows a token has
touched (`SparseRows`), so a 50,000-key memory or a 10,000-state automaton never builds
its (d+1)·d_out state.

Compiled models' weights are small integers, so every sum is exact and the results equal
the batched path's bit for bit; for other weights a row hit by two entries of one token
is summed in another order (within rounding of the batched path).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lat.runtime.forms import TokenDecoder
from lat.runtime.forms.sparse import SparseDecoder
from lat.runtime.tokens import SpecPlan, Tokens


class SparseRows(dict):
    """The folded state's rows that a token has touched (row → d_out vector); any other
    row reads as zeros (created on first use, so `state[row] += delta` works)."""

    def __init__(self, width: int, dtype: np.dtype) -> None:
        super().__init__()
        self.width, self.dtype = width, dtype

    def __missing__(self, row: int) -> np.ndarray:
        value = self[row] = np.zeros(self.width, dtype=self.dtype)
        return value


class SparseTables:
    """A `SparseDecoder`'s per-code tables as numpy rows on demand: the value row
    [V_h e_c]_h (H·d_out, dense) and the Q entries (row k, head h, coef) of a code
    (codes above d are the negated rows, as the signed decoder has them)."""

    def __init__(self, decoder: SparseDecoder) -> None:
        self.d, self.width = decoder.d, decoder.H * decoder.d_out
        values, queries = decoder.values, decoder.queries
        self.v_ptr = values.ptr.cpu().numpy()
        self.v_target = values.target.cpu().numpy()
        self.v_coef = values.coef.cpu().numpy()
        self.q_ptr = queries.ptr.cpu().numpy()
        self.q_head = queries.head.cpu().numpy()
        self.q_target = queries.target.cpu().numpy()
        self.q_coef = queries.coef.cpu().numpy()
        self.dtype = self.v_coef.dtype
        self.absolute = decoder.absolute

    def _base(self, code: int) -> tuple[int, float]:
        if code > self.d:
            return code - (self.d + 1), (1.0 if self.absolute else -1.0)
        return code, 1.0

    def value(self, code: int) -> np.ndarray:
        base, sign = self._base(code)
        row = np.zeros(self.width, dtype=self.dtype)
        start, stop = self.v_ptr[base], self.v_ptr[base + 1]
        np.add.at(row, self.v_target[start:stop], self.v_coef[start:stop])
        return row if sign == 1.0 else -row

    def queries(self, code: int) -> list[tuple[int, int, float]]:
        base, sign = self._base(code)
        start, stop = self.q_ptr[base], self.q_ptr[base + 1]
        return [(int(k), int(h), sign * float(c)) for k, h, c in zip(
            self.q_target[start:stop], self.q_head[start:stop], self.q_coef[start:stop],
            strict=True)]

    def is_identity(self) -> bool:
        """H = 1 and Q = I: every code c < d has the single entry (c, head 0, 1)."""
        d = self.d
        return bool(len(self.q_target) == d and np.array_equal(np.diff(self.q_ptr[:d + 1]),
                                                               np.ones(d, dtype=np.int64))
                    and np.array_equal(self.q_target, np.arange(d))
                    and np.all(self.q_coef == 1) and np.all(self.q_head == 0))

    def all_values(self) -> np.ndarray:
        return self.v_coef


class SinglePlan:
    """A token spec as Python tables: codes from decoded indices, the pointer, the word."""

    def __init__(self, plan: SpecPlan, tokens: Tokens) -> None:
        self.uses_input = plan.uses_input
        self.fields: list[tuple[int | None, bool, list[tuple[str, str | None, list[int]]]]] = []
        for field in plan.fields:
            sources = [(kind, name, table.tolist()) for kind, name, table in field.sources]
            self.fields.append((field.const, field.signed, sources))
        self.d = tokens.d
        self.negative_base = tokens.negative_base

    def codes(self, decoded: list[int] | None, names: dict[str, int], symbol: int,
              cells: list[int]) -> tuple[int, ...]:
        d = self.d
        out: list[int] = []
        for const, signed, sources in self.fields:
            if const is not None:
                out.append(const)
                continue
            parts = []
            for kind, name, table in sources:
                if kind == "input":
                    parts.append(table[symbol])
                elif kind == "cell":
                    parts.append(table[cells[int(name)]])
                elif kind == "output":
                    if decoded is None:
                        raise ValueError(f"the first prompt token reads output '{name}' "
                                         "before anything was decoded")
                    parts.append(table[decoded[names[name]]])
                else:
                    parts.append(table[0])
            if signed:
                first, plus, minus = parts
                if first < 0 or plus < 0 or minus < 0:
                    out += [d, d]
                else:
                    out += [first + plus, self.negative_base + first + minus]
            else:
                total = sum(parts)
                out.append(d if total < 0 else total)
        return tuple(out) if out else (d,)


class SingleDecoder:
    """The coordinate decoder's state for one row, in numpy (see the module docstring)."""

    def __init__(self, decoder: TokenDecoder | SparseDecoder) -> None:
        self.H, self.d, self.d_out = decoder.H, decoder.d, decoder.d_out
        self.scale, self.normalise, self.length = decoder.scale, decoder.normalise, 0
        self.signed = decoder.signed
        self.tables = SparseTables(decoder) if isinstance(decoder, SparseDecoder) else None
        if self.tables is not None:
            self.dtype = self.tables.dtype
            self.unit = self.tables.is_identity()
            self.value_row = self.tables.value
            self.state: np.ndarray | SparseRows = SparseRows(self.d_out, self.dtype)
        else:
            self.values = decoder.values.cpu().numpy()
            self.dtype = self.values.dtype
            self.unit = decoder.unit
            if not self.unit:
                self.k_index = decoder.k_index.cpu().numpy()
                self.h_index = decoder.h_index.cpu().numpy()
                self.coef = decoder.coef.cpu().numpy()
            self.value_row = self.values.__getitem__
            self.state = np.zeros((self.d + 1, self.d_out), dtype=self.dtype)
        self.cache: dict[tuple[int, ...], tuple] = {}

    def _entries(self, code: int) -> list[tuple[int, int, float]]:
        """(state row, head, coef) of every nonzero of Q_hᵀ e_code."""
        if self.tables is not None:
            return self.tables.queries(code)
        return [(int(k), int(h), c) for k, h, c in zip(
            self.k_index[code], self.h_index[code], self.coef[code], strict=True)
            if k != self.d]

    def _row(self, code: int) -> tuple[int, float]:
        d = self.d
        if self.signed and code > d:
            return code - (d + 1), -1.0
        return code, 1.0

    def _compile(self, codes: tuple[int, ...]) -> tuple:
        """Rows the token updates and their increments; rows it reads and their signs."""
        d, d_out = self.d, self.d_out
        v = (sum(self.value_row(code) for code in codes) if len(codes) > 1
             else self.value_row(codes[0]))
        increments: dict[int, np.ndarray] = {}
        for code in codes:
            if self.unit:
                row, sign = self._row(code)
                entries = [] if row == d else [(row, 0, sign)]
            else:
                entries = self._entries(code)
            for row, head, coef in entries:
                part = (self.dtype.type(coef) * v[head * d_out:(head + 1) * d_out])
                increments[row] = increments[row] + part if row in increments else part
        rows = np.array(sorted(increments), dtype=np.int64)
        delta = (np.stack([increments[r] for r in sorted(increments)]) if increments
                 else np.zeros((0, d_out), dtype=self.dtype))
        read = [self._row(code) for code in codes]
        read_rows = np.array([r for r, _ in read], dtype=np.int64)
        signs = np.array([s for _, s in read], dtype=self.dtype)
        return rows, delta, read_rows, signs, len(read) == 1 and signs[0] == 1.0

    def start_counting(self, plans: list[SinglePlan], decode: SingleDecode) -> None:
        """Count tokens instead of adding rows where that is exact (see `counted`).

        With Q = I (H = 1) and tokens of one code each, row c of the state is only ever
        touched by token c, so it is count(c)·(V e_c). When every entry of V is an integer
        and count·max|V| stays below 2^(mantissa-1), every state entry is an exact integer
        and count(c)·(V e_c) is bit for bit the sum the row holds; the decode of n·v is
        then that of v with margin and magnitude times n (argmax and ties unchanged).
        """
        self.counting = False
        if not (self.unit and not self.signed and self.scale == 1.0 and not self.normalise):
            return
        if not all(len(plan.fields) <= 1 and not any(signed for _, signed, _ in plan.fields)
                   for plan in plans):
            return
        values = self.tables.all_values() if self.tables is not None else self.values
        if not bool(np.all(values == np.round(values))):
            return
        biggest = max(float(np.abs(values).max()) if values.size else 0.0, 1.0)
        self.limit = int(2 ** (np.finfo(self.dtype).nmant - 1) / biggest)
        self.counts: dict[int, int] = {}
        self.bases: dict[int, tuple] = {}
        self.decode = decode
        self.counting = True

    def counted(self, code: int, record: bool) -> tuple:
        """One step in counting mode: (y or None, indices, margin, magnitude)."""
        n = self.counts.get(code, 0) + 1
        if n > self.limit:  # exactness would end: write the rows out, step them from now
            for c, count in self.counts.items():
                self.state[c] = self.dtype.type(count) * self.value_row(c)
            self.counting = False
            return None
        self.counts[code] = n
        base = self.bases.get(code)
        if base is None:
            v = np.array(self.value_row(code), copy=True)
            # the value row is kept only when outputs are recorded (bounded memory)
            base = (v if record else None, *self.decode(v))
            self.bases[code] = base
        v, indices, margin, magnitude = base
        self.length += 1
        times = self.dtype.type(n)
        return (times * v if record else None), indices, times * margin, times * magnitude

    def step(self, codes: tuple[int, ...]) -> np.ndarray:
        entry = self.cache.get(codes)
        if entry is None:
            entry = self.cache[codes] = self._compile(codes)
        rows, delta, read_rows, signs, plain = entry
        state = self.state
        if len(rows) == 1:
            state[rows[0]] += delta[0]
        elif len(rows) and self.tables is not None:
            for row, change in zip(rows.tolist(), delta, strict=True):
                state[row] += change
        elif len(rows):
            state[rows] += delta
        if plain:
            y = state[read_rows[0]].copy()
        elif self.tables is not None:
            y = signs @ np.stack([state[row] for row in read_rows.tolist()])
        else:
            y = signs @ state[read_rows]
        self.length += 1
        if self.scale != 1.0:
            y = y * self.dtype.type(self.scale)
        if self.normalise:
            y = y / self.dtype.type(self.length)
        return y


class SingleDecode:
    """`tokens.Decode` for one output vector, in numpy (ties to the lowest index)."""

    def __init__(self, interface, nonnegative: bool) -> None:
        slices = interface.output_slices()
        self.names = [field.name for field, _ in slices]
        self.blocks = [(offset, field.width) for field, offset in slices]
        self.nonnegative = nonnegative
        self.simple = all(width > 1 for _, width in self.blocks)
        self.wide = any(width > 1 for _, width in self.blocks)
        if self.simple:
            width = max(w for _, w in self.blocks)
            d_out = interface.d_out
            index = np.full((len(slices), width), d_out, dtype=np.int64)
            for j, (offset, w) in enumerate(self.blocks):
                index[j, :w] = np.arange(offset, offset + w)
            self.index, self.width = index, width
            self.rows = np.arange(len(slices))

    def __call__(self, y: np.ndarray) -> tuple[list[int], np.floating, np.floating]:
        if self.simple:
            blocks = np.append(y, -np.inf)[self.index]
            which = blocks.argmax(axis=1)
            top = blocks[self.rows, which]
            blocks[self.rows, which] = -np.inf
            gaps = top - blocks.max(axis=1)
            indices = which.tolist()
            magnitude = top.max() if self.nonnegative else np.abs(y).max()
            return indices, gaps.min(), magnitude
        indices, gaps, tops = [], [], []
        for offset, width in self.blocks:
            block = y[offset:offset + width]
            if width == 1:
                indices.append(0)
                gaps.append(block[0])
                tops.append(max(block[0], 0) if self.wide else block[0])
                continue
            which = int(block.argmax())
            top = block[which]
            rest = np.delete(block, which)
            indices.append(which)
            gaps.append(top - rest.max())
            tops.append(top)
        magnitude = max(tops) if self.nonnegative else np.abs(y).max()
        return indices, min(gaps), magnitude


def run_single(tokens: Tokens, decoder: TokenDecoder, interface, nonnegative: bool,
               word: tuple[str, ...], dtype: torch.dtype, record: bool,
               history: bool, rounding: float = 0.0) -> dict[str, object]:
    """Step one sequence to the end; return what `execute._collect` needs for one row.

    Returns {"indices": list of per-answer index lists (or only the last one),
    "margins"/"magnitudes" (per alive answer, or their running min / all-resolved flag),
    "steps", "stopped_by", "coords" (recorded codes), "outputs" (recorded y)}.
    """
    state = SingleDecoder(decoder)
    decode = SingleDecode(interface, nonnegative)
    prompt = [SinglePlan(plan, tokens) for plan in tokens.prompt]
    cycle = [SinglePlan(plan, tokens) for plan in tokens.feed]
    names = {name: j for j, name in enumerate(decode.names)}
    state.start_counting(prompt + cycle, decode)
    symbols = tokens.symbols[0].tolist()
    cells = symbols
    length = len(word)
    unit = state.dtype.type(64.0 * torch.finfo(dtype).eps)  # execute.resolution
    one = state.dtype.type(1.0)
    decoded: list[int] | None = None
    pointer = 0
    kept: list[list[int]] = []
    last: list[int] = []
    smallest, all_resolved, answers = math.inf, True, 0
    coords_out: list[tuple[int, ...]] = []
    outputs: list[np.ndarray] = []

    def advance(plan: SinglePlan, answer: bool) -> None:
        nonlocal decoded, pointer, smallest, all_resolved, answers, last
        codes = plan.codes(decoded, names, symbols[min(pointer, length)], cells)
        pointer += plan.uses_input
        counted = state.counted(codes[0], record) if state.counting else None
        if counted is not None:
            y, indices, margin, magnitude = counted
        else:
            y = state.step(codes)
            indices, margin, magnitude = decode(y)
        if record:
            coords_out.append(codes)
            outputs.append(y)
        decoded = indices
        if answer:
            answers += 1
            smallest = min(smallest, float(margin))
            threshold = unit * max(magnitude, one)
            if rounding:  # execute._Answers: + twice the weights' rounding effect
                threshold = threshold + 2.0 * rounding * magnitude
            if not margin > threshold:
                all_resolved = False
            if history:
                kept.append(indices)
            last = indices

    for position, plan in enumerate(prompt):
        advance(plan, answer=position == len(prompt) - 1)
    halt_rules = [(names[name], interface.output_field(name).values.index(value))
                  for name, value in interface.halt_on]
    limit = interface.max_steps if interface.max_steps is not None else math.inf
    stopped, step = "max_steps", 0
    while cycle and step < limit:
        feed = cycle[step % len(cycle)]
        if halt_rules and decoded is not None and any(
                decoded[j] == index for j, index in halt_rules):
            stopped = "halt"
            break
        if feed.uses_input and pointer >= length:
            stopped = "input"
            break
        advance(feed, answer=True)
        step += 1
    return {"kept": kept if history else ([last] if answers else []), "answers": answers,
            "margin": smallest, "resolved": all_resolved, "steps": max(answers - 1, 0),
            "stopped_by": stopped, "coords": coords_out, "outputs": outputs}
