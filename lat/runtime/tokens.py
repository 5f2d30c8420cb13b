"""The interface compiled to lookup tables, and all output fields decoded at once.

A rollout step carries integer *codes*, not vectors: `Tokens` compiles each token spec of
an interface once into lookup tables (`SpecPlan`) and builds the codes of a batch's next
token from decoded outputs and the input pointer with tensor indexing. `Decode` reads
every output block's argmax and margin in one gather and one topk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lat.runtime.interface import Interface, TokenSpec

INVALID = -(1 << 40)  # a table entry for "value not in this field": pushes coords < 0


# --------------------------------------------------------------------------------------
# The interface compiled to lookup tables
# --------------------------------------------------------------------------------------


@dataclass
class FieldPlan:
    """One token field's code: table_a[index_a] (+ table_b[index_b] for a product)."""

    sources: list[tuple[str, str | None, torch.Tensor]]  # (kind, output name, table)
    const: int | None = None  # a const field: a fixed code
    signed: bool = False  # (a, b, c): codes e_(a,b) and −e_(a,c)


@dataclass
class SpecPlan:
    fields: list[FieldPlan]
    uses_input: bool
    uses_output: bool
    may_be_invalid: bool


def value_table(values: tuple[str, ...], source_values: tuple[str, ...], scale: int,
                 offset: int, device: torch.device) -> torch.Tensor:
    """Map an index into `source_values` to offset + scale·(index of the same value in
    `values`), or INVALID when the value is not in this field (re-embedding by value)."""
    position: dict[str, int] = {}
    for i, v in enumerate(values):  # the first occurrence, as tuple.index finds it
        position.setdefault(v, i)
    entries = [offset + scale * position[v] if v in position else INVALID
               for v in source_values]
    return torch.tensor(entries, dtype=torch.long, device=device)


class Tokens:
    """Token *codes* for a batch, built from decoded outputs and the input pointer.

    A token is the sum of one basis vector per token field, named by an integer code:
    codes 0..d-1 are the unit vectors of one-hot, product and const fields (a coordinate),
    code d is nothing (a value the field cannot embed, or a finished row), and codes above
    d are the rows of `embedding` fields (dense vectors at the field's offset). Tokens of
    an interface without embedding fields are binary: `binary` is True and the coordinate
    decoder applies. Each token spec is compiled once into lookup tables (`SpecPlan`).
    """

    def __init__(self, interface: Interface, words: list[tuple[str, ...]],
                 device: torch.device) -> None:
        d = self.d = interface.d
        self.interface, self.device, self.batch = interface, device, len(words)
        rows: list[torch.Tensor] = []
        self.embedding_base: dict[str, int] = {}
        for field in interface.token_fields:
            if field.kind == "embedding":
                offset = interface.token_offset(field.name)
                self.embedding_base[field.name] = d + 1 + len(rows)
                for vector in field.vectors:
                    row = torch.zeros(d, dtype=torch.float64)
                    row[offset : offset + len(vector)] = torch.tensor(vector, dtype=torch.float64)
                    rows.append(row)
        # A three-source product (a, b, c) embeds e_(a,b) − e_(a,c): the negative unit
        # vectors get codes of their own, after the embedding rows.
        specs = (*interface.prompt, *interface.feed_cycle)
        signed = any(len(sources) == 3 for spec in specs for sources in spec.values())
        self.negative_base = d + 1 + len(rows) if signed else None
        # ±unit tokens only (no embedding rows): the coordinate decoder's signed mode
        self.signed_units = signed and not rows
        if signed:
            rows.extend(-torch.eye(d, dtype=torch.float64))
        self.binary = not rows
        self.basis = None if self.binary else torch.cat(
            [torch.eye(d, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64),
             torch.stack(rows)]).to(device)
        self.nonnegative = self.binary or bool((self.basis >= 0).all())
        # An input symbol outside the alphabet takes `input_other` where the interface
        # declares one (a memory's default); check_word has already accepted it.
        # `input_fill` is what "input:C" reads past the end of the input (a blank tape).
        other, fill = interface.input_other, interface.input_fill
        self.alphabet = (tuple(interface.input_alphabet) + ((other,) if other else ())
                         + ((fill,) if fill is not None else ()))
        index = {s: i for i, s in enumerate(self.alphabet)}
        unknown = index[other] if other else None
        self.lengths = torch.tensor([len(w) for w in words], dtype=torch.long)
        self.longest = int(self.lengths.max()) if words else 0
        cells = max(self.longest, int(interface.max_input_length or 0))
        symbols = torch.full((self.batch, cells + 1),
                             index[fill] if fill is not None else 0, dtype=torch.long)
        flat = [index.get(s, unknown) for w in words for s in w]
        if flat:
            rows_ = torch.repeat_interleave(torch.arange(self.batch), self.lengths)
            cols = torch.cat([torch.arange(len(w)) for w in words])
            symbols[rows_, cols] = torch.tensor(flat, dtype=torch.long)
        self.symbols = symbols.to(device)
        self.lengths = self.lengths.to(device)
        self.prompt = [self._plan(spec) for spec in interface.prompt]
        self.feed = [self._plan(spec) for spec in interface.feed_cycle]
        self._input_columns: dict[int, torch.Tensor] = {}  # id(table) → table[symbols]

    def _plan(self, spec: TokenSpec | tuple) -> SpecPlan:
        interface, device = self.interface, self.device
        fields: list[FieldPlan] = []
        uses_input = uses_output = invalid = False
        for name, sources in dict(spec or {}).items():
            field = interface.token_field(name)
            offset = interface.token_offset(name)
            if field.kind == "const":
                fields.append(FieldPlan([], const=offset))
                continue
            if field.kind == "embedding":  # the code of value i is base + i
                slots = [(field.values, 1, self.embedding_base[name])]
            elif field.kind == "product" and len(sources) == 3:  # e_(a,b) − e_(a,c)
                if self.negative_base is None:
                    raise ValueError(f"signed token field '{name}' outside the interface")
                width = len(field.values2)
                slots = [(field.values, width, offset), (field.values2, 1, 0),
                         (field.values2, 1, 0)]
            elif field.kind == "product":
                slots = [(field.values, len(field.values2), offset), (field.values2, 1, 0)]
            else:
                slots = [(field.values, 1, offset)]
            if len(sources) != len(slots):
                raise ValueError(f"token field '{name}' takes {len(slots)} source(s), "
                                 f"got {len(sources)}")
            plan = FieldPlan([], signed=len(sources) == 3 and field.kind == "product")
            for source, (values, scale, base) in zip(sources, slots, strict=True):
                if source == "input":
                    table = value_table(values, self.alphabet, scale, base, device)
                    plan.sources.append(("input", None, table))
                    uses_input = True
                elif source.startswith("input:"):  # cell C of the input, never consumed
                    table = value_table(values, self.alphabet, scale, base, device)
                    plan.sources.append(("cell", source[len("input:"):], table))
                elif source.startswith("output:"):
                    out = source[len("output:"):]
                    table = value_table(values, interface.output_field(out).values, scale,
                                         base, device)
                    plan.sources.append(("output", out, table))
                    uses_output = True
                elif source.startswith("const:"):
                    table = value_table(values, (source[len("const:"):],), scale, base, device)
                    plan.sources.append(("const", None, table))
                else:
                    raise ValueError(f"unknown token source '{source}'")
                invalid |= bool((plan.sources[-1][2] < 0).any())
            fields.append(plan)
        return SpecPlan(fields, uses_input, uses_output, invalid)

    def _input(self, table: torch.Tensor, pointer: int) -> torch.Tensor:
        key = id(table)
        if key not in self._input_columns:
            self._input_columns[key] = table[self.symbols].t().contiguous()  # (L+1, B)
        return self._input_columns[key][min(pointer, self.longest)]

    def coords(self, plan: SpecPlan, decoded: dict[str, torch.Tensor] | None,
               pointer: int) -> torch.Tensor:
        """The codes (B, F) of one token per row (F ≥ 1; an empty spec is code d)."""
        columns = []
        for field in plan.fields:
            if field.const is not None:
                columns.append(torch.full((self.batch,), field.const, dtype=torch.long,
                                          device=self.device))
                continue
            parts = []
            for kind, name, table in field.sources:
                if kind == "input":
                    part = self._input(table, pointer)
                elif kind == "cell":
                    part = table.index_select(0, self.symbols[:, int(name)])
                elif kind == "output":
                    if decoded is None:
                        raise ValueError(f"the first prompt token reads output '{name}' "
                                         "before anything was decoded")
                    part = table.index_select(0, decoded[name])
                else:
                    part = table.expand(self.batch)
                parts.append(part)
            if field.signed:
                first, plus, minus = parts
                bad = (first < 0) | (plus < 0) | (minus < 0)
                columns.append(torch.where(bad, -1, first + plus))
                columns.append(torch.where(bad, -1, self.negative_base + first + minus))
            else:
                columns.append(sum(parts[1:], parts[0]))
        if not columns:
            return torch.full((self.batch, 1), self.d, dtype=torch.long, device=self.device)
        coords = columns[0][:, None] if len(columns) == 1 else torch.stack(columns, dim=1)
        if plan.may_be_invalid:  # a value the field cannot embed contributes nothing
            coords = torch.where(coords < 0, self.d, coords)
        return coords

    def dense(self, coords: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Codes (..., F) → tokens (..., d)."""
        if self.signed_units:  # code d+1+c is −e_c, code 2d+1 nothing: signed scatter
            d = self.d
            negative = coords > d
            rows = torch.where(negative, coords - (d + 1), coords)
            signs = 1.0 - 2.0 * negative.to(dtype)
            z = torch.zeros(*coords.shape[:-1], d + 1, dtype=dtype, device=coords.device)
            z.scatter_add_(-1, rows, signs)
            return z[..., :d]
        if self.basis is not None:
            return self.basis.to(dtype)[coords].sum(dim=-2)
        z = torch.zeros(*coords.shape[:-1], self.d + 1, dtype=dtype, device=coords.device)
        z.scatter_(-1, coords, 1.0)
        return z[..., : self.d]


# --------------------------------------------------------------------------------------
# Decoding all output fields at once
# --------------------------------------------------------------------------------------


class Decode:
    """Argmax and top-1 minus top-2 of every output block in one gather + one topk."""

    def __init__(self, interface: Interface, nonnegative: bool, device: torch.device) -> None:
        slices = interface.output_slices()
        self.names = [field.name for field, _ in slices]
        widths = [field.width for field, _ in slices]
        self.width = max(widths)
        d_out = interface.d_out
        index = torch.full((len(slices), self.width), d_out, dtype=torch.long)  # -inf pad
        for j, (field, offset) in enumerate(slices):
            index[j, : field.width] = torch.arange(offset, offset + field.width)
            if field.width == 1 and self.width > 1:
                index[j, 1] = d_out + 1  # compared against 0, as a single value's margin
        self.index = index.view(-1).to(device)
        self.single = torch.tensor([w == 1 for w in widths], device=device)
        self.has_single = bool(self.single.any())
        self.nonnegative = nonnegative
        self.pad = torch.tensor([[-math.inf, 0.0]], device=device)
        # one wide field beside narrow ones (a 10,000-state automaton's state and its
        # verdict): padding every block to the widest would add half the work or more,
        # so such layouts decode field by field on slices of y
        self.blocks = [(offset, field.width) for field, offset in slices]
        self.sliced = self.width >= 256 and 2 * self.width * len(widths) > 3 * sum(widths)

    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices (B, fields), margin (B,), magnitude max|y| (B,))."""
        if self.sliced:
            return self._by_field(y)
        B = y.shape[0]
        extended = torch.cat([y, self.pad.to(y.dtype).expand(B, 2)], dim=1)
        blocks = extended.index_select(1, self.index).view(B, -1, self.width)
        if self.width == 1:
            indices = torch.zeros(blocks.shape[:2], dtype=torch.long, device=y.device)
            gaps = blocks[..., 0]
            top = gaps
        else:
            values, which = blocks.topk(2, dim=2)
            indices, top = which[..., 0], values[..., 0]
            gaps = values[..., 0] - values[..., 1]
            if self.has_single:  # a lone value v: index 0, margin v (also when v < 0)
                flipped = self.single & (indices != 0)
                gaps = torch.where(flipped, -gaps, gaps)
                indices = indices.masked_fill(self.single, 0)
        margin = gaps.amin(dim=1)
        magnitude = top.amax(dim=1) if self.nonnegative else y.abs().amax(dim=1)
        return indices, margin, magnitude

    def _by_field(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same decode, one field at a time (no padded gather): a lone value v has
        index 0, margin v and top max(v, 0), as it has beside the padding's 0."""
        indices, gaps, tops = [], [], []
        for offset, width in self.blocks:
            if width == 1:
                value = y[:, offset]
                indices.append(torch.zeros_like(value, dtype=torch.long))
                gaps.append(value)
                tops.append(value.clamp(min=0))
                continue
            values, which = y[:, offset : offset + width].topk(2, dim=1)
            indices.append(which[:, 0])
            gaps.append(values[:, 0] - values[:, 1])
            tops.append(values[:, 0])
        margin = torch.stack(gaps, dim=1).amin(dim=1)
        magnitude = (torch.stack(tops, dim=1).amax(dim=1) if self.nonnegative
                     else y.abs().amax(dim=1))
        return torch.stack(indices, dim=1), margin, magnitude
