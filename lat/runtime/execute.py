"""Batched autoregressive execution of an artifact: prompt, step, decode, feed back, halt.

`rollout` runs many inputs at once. Every sequence in a batch advances one token per
step; the token of each sequence is built from its own decoded outputs and input pointer
with tensor indexing (no per-sequence Python work inside the step loop). A sequence stops
when a feedback step needs an input symbol and its input is exhausted, when an output field
decodes to a halting value (`halt_on`), or after `max_steps` feedback steps.

How a step runs. A token is the sum of one basis vector per token field, so the step
loop carries integer *codes* (`_Tokens`), not vectors: a token spec is compiled once into
lookup tables. Tokens of one-hot, product and const fields are binary, and the default
decoder (`forms.TokenDecoder`, folded state) touches only the state rows their
coordinates name — O(H·d·d_out) per new token at most, O(d_out) for the automata the
compiler emits; machines' signed tokens (±unit vectors) use its signed mode. Interfaces
with dense `embedding` fields, and kernel="recurrent", run dense recurrent steps. A long
prompt that does not read the model's own outputs is prefilled in one chunked call and
the decoder resumes from its state. `reference=True` recomputes every output from the
whole prefix with the loop form of the definition.

Margins. Every decode records its margin (top-1 minus top-2 of each output block). A
margin is *resolved* when it exceeds what the number formats can move it by:
64 ulps of the state format at the output's magnitude, plus, for bf16/fp16 weights,
twice the worst-case effect of rounding the weights, (2u + u²)·E, where
E = Σ_h |V_h| S_abs |Q_h| |z| with S_abs = Σ_s |z_s||z_s|ᵀ bounds every output's sum of
absolute terms (E = |y| when V, Q and the tokens are non-negative, as for compiled
automata; otherwise it is computed alongside, by the same stepper on |V|, |Q|, |z|).
A run whose margin does not survive its format is flagged (`margin_resolved=False`) or,
with `on_unresolved="raise"`, refused with PrecisionError: never a silently wrong answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lat.runtime.device import resolve_device, single_thread
from lat.runtime.errors import InputError, PrecisionError
from lat.runtime.forms import (
    FORMATS,
    KERNELS,
    RecurrentState,
    TokenDecoder,
    mhla,
    mhla_reference,
    prepare,
    step_prepared,
)
from lat.runtime.interface import Interface, TokenSpec
from lat.runtime.model import CompiledModel

# Floats of decode state a batch may hold at once; bigger batches are split.
STATE_BUDGET = 1 << 25
DTYPES = {"fp32": torch.float32, "fp64": torch.float64}
WEIGHT_FORMATS = ("fp32", "bf16", "fp16", "fp64")
PREFILL_MIN = 16  # prompts at least this long (and free of feedback) may be prefilled
# Cost model of the coordinate decoder's prefill choice (flop-equivalents, measured on the
# 2-core CPU): a scattered index op costs ~8 matmul flops; one Python step ~2e5 flops.
INDEX_PENALTY = 8
STEP_OVERHEAD = 200_000
GPU_MIN_STATE = 1 << 22  # "auto" runs a batch on CUDA only above this many state floats
_INVALID = -(1 << 40)  # a table entry for "value not in this field": pushes coords < 0


@dataclass(frozen=True)
class RunResult:
    """One input's execution: decoded output fields at every answer position.

    Answer positions are the last prompt position and every feedback position after it
    (for an automaton: q_0 .. q_n).
    """

    input: tuple[str, ...]
    decoded: dict[str, tuple[str, ...]]
    margin: float
    margin_resolved: bool
    steps: int
    stopped_by: str  # "input", "halt" or "max_steps"
    tokens: np.ndarray | None = None  # (T, d) when recorded
    outputs: np.ndarray | None = None  # (T, d_out) raw model outputs when recorded

    def value(self, field: str) -> str:
        """The decoded value of `field` at the last position."""
        return self.decoded[field][-1]


def resolution(dtype: torch.dtype, magnitude: torch.Tensor) -> torch.Tensor:
    """The smallest margin the state format resolves at this output magnitude.

    Accumulated rounding in a length-T sum stays far below 64 units in the last place of
    the largest output for these one-hot programs; a margin must clear that.
    """
    return 64.0 * torch.finfo(dtype).eps * magnitude.clamp(min=1.0)


def weight_rounding(weights: str) -> float:
    """Relative bound on an output's change from rounding V and Q to `weights`: each
    product V·S·Q·z picks up (1+δ_V)(1+δ_Q) - 1 ≤ 2u + u² (u: unit roundoff)."""
    if weights in ("fp32", "fp64"):
        return 0.0
    u = torch.finfo(FORMATS[weights]).eps / 2
    return 2 * u + u * u


def check_weights(model: CompiledModel, weights: str) -> None:
    """Refuse up front weights the format cannot hold at all (overflow, underflow)."""
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format '{weights}' "
                         f"(choose from {', '.join(WEIGHT_FORMATS)})")
    if weights in ("fp32", "fp64"):
        return
    target = FORMATS[weights]
    for name, tensor in (("V", model.V), ("Q", model.Q)):
        rounded = tensor.to(target)
        if not bool(torch.isfinite(rounded).all()):
            raise PrecisionError(
                f"{name} overflows {weights} (largest |entry| {float(tensor.abs().max()):g}); "
                "run with --weights fp32")
        lost = (tensor != 0) & (rounded == 0)
        if bool(lost.any()):
            raise PrecisionError(
                f"{int(lost.sum())} nonzero entries of {name} underflow to 0 in {weights}; "
                "run with --weights fp32")


# --------------------------------------------------------------------------------------
# The interface compiled to lookup tables
# --------------------------------------------------------------------------------------


@dataclass
class _FieldPlan:
    """One token field's code: table_a[index_a] (+ table_b[index_b] for a product)."""

    sources: list[tuple[str, str | None, torch.Tensor]]  # (kind, output name, table)
    const: int | None = None  # a const field: a fixed code
    signed: bool = False  # (a, b, c): codes e_(a,b) and −e_(a,c)


@dataclass
class _SpecPlan:
    fields: list[_FieldPlan]
    uses_input: bool
    uses_output: bool
    may_be_invalid: bool


def _value_table(values: tuple[str, ...], source_values: tuple[str, ...], scale: int,
                 offset: int, device: torch.device) -> torch.Tensor:
    """Map an index into `source_values` to offset + scale·(index of the same value in
    `values`), or _INVALID when the value is not in this field (re-embedding by value)."""
    entries = [offset + scale * values.index(v) if v in values else _INVALID
               for v in source_values]
    return torch.tensor(entries, dtype=torch.long, device=device)


class _Tokens:
    """Token *codes* for a batch, built from decoded outputs and the input pointer.

    A token is the sum of one basis vector per token field, named by an integer code:
    codes 0..d-1 are the unit vectors of one-hot, product and const fields (a coordinate),
    code d is nothing (a value the field cannot embed, or a finished row), and codes above
    d are the rows of `embedding` fields (dense vectors at the field's offset). Tokens of
    an interface without embedding fields are binary: `binary` is True and the coordinate
    decoder applies. Each token spec is compiled once into lookup tables (`_SpecPlan`).
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

    def _plan(self, spec: TokenSpec | tuple) -> _SpecPlan:
        interface, device = self.interface, self.device
        fields: list[_FieldPlan] = []
        uses_input = uses_output = invalid = False
        for name, sources in dict(spec or {}).items():
            field = interface.token_field(name)
            offset = interface.token_offset(name)
            if field.kind == "const":
                fields.append(_FieldPlan([], const=offset))
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
            plan = _FieldPlan([], signed=len(sources) == 3 and field.kind == "product")
            for source, (values, scale, base) in zip(sources, slots, strict=True):
                if source == "input":
                    table = _value_table(values, self.alphabet, scale, base, device)
                    plan.sources.append(("input", None, table))
                    uses_input = True
                elif source.startswith("input:"):  # cell C of the input, never consumed
                    table = _value_table(values, self.alphabet, scale, base, device)
                    plan.sources.append(("cell", source[len("input:"):], table))
                elif source.startswith("output:"):
                    out = source[len("output:"):]
                    table = _value_table(values, interface.output_field(out).values, scale,
                                         base, device)
                    plan.sources.append(("output", out, table))
                    uses_output = True
                elif source.startswith("const:"):
                    table = _value_table(values, (source[len("const:"):],), scale, base, device)
                    plan.sources.append(("const", None, table))
                else:
                    raise ValueError(f"unknown token source '{source}'")
                invalid |= bool((plan.sources[-1][2] < 0).any())
            fields.append(plan)
        return _SpecPlan(fields, uses_input, uses_output, invalid)

    def _input(self, table: torch.Tensor, pointer: int) -> torch.Tensor:
        key = id(table)
        if key not in self._input_columns:
            self._input_columns[key] = table[self.symbols].t().contiguous()  # (L+1, B)
        return self._input_columns[key][min(pointer, self.longest)]

    def coords(self, plan: _SpecPlan, decoded: dict[str, torch.Tensor] | None,
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
        if self.basis is not None:
            return self.basis.to(dtype)[coords].sum(dim=-2)
        z = torch.zeros(*coords.shape[:-1], self.d + 1, dtype=dtype, device=coords.device)
        z.scatter_(-1, coords, 1.0)
        return z[..., : self.d]


# --------------------------------------------------------------------------------------
# Decoding all output fields at once
# --------------------------------------------------------------------------------------


class _Decode:
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

    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices (B, fields), margin (B,), magnitude max|y| (B,))."""
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


# --------------------------------------------------------------------------------------
# Steppers: sparse (default), dense recurrent, reference
# --------------------------------------------------------------------------------------


class _SparseStepper:
    """The coordinate decoder (binary tokens, or ±unit tokens with `signed`).

    `absolute` feeds |z| (for the rounding bound E) and is for binary tokens only, where
    |z| = z; the bound of signed tokens runs on the dense stepper."""

    def __init__(self, V: torch.Tensor, Q: torch.Tensor, model: CompiledModel, batch: int,
                 weights: str, dtype: torch.dtype, device: torch.device, kernel: str,
                 signed: bool = False, absolute: bool = False) -> None:
        if signed and absolute:
            raise ValueError("the |z| bound of signed tokens needs the dense stepper")
        self.V, self.Q, self.weights, self.kernel = V, Q, weights, kernel
        self.model, self.dtype, self.device = model, dtype, device
        self.absolute = absolute
        self.decoder = TokenDecoder(V, Q, batch, weights=weights, dtype=dtype, device=device,
                                    scale=model.scale, normalise=model.normalise,
                                    signed=signed)

    def prefill_pays(self, prompt: int, fields: int) -> bool:
        """Prefilling (chunked kernel, then folding S into the decoder's Nᵀ, O(H·d²·d_out)
        per row) against stepping the prompt token by token (O(F·K·d_out) per row and
        token, plus a fixed Python cost per step), in flop-equivalents: the fold alone
        dominates for machines (unary_mul: 10.9 s prefilled vs 0.5 s stepped, B = 256)
        and context-placement prompts; very long prompts over small d still prefill."""
        decoder = self.decoder
        B, H, d, d_out = decoder.batch, decoder.H, decoder.d, decoder.d_out
        reads = 1 if decoder.unit else (decoder.k_index.shape[1] if decoder.sparse else H * d)
        stepped = prompt * (B * fields * reads * d_out * INDEX_PENALTY + STEP_OVERHEAD)
        prefilled = B * (prompt * 4 * H * d * d + 2 * H * d * d * d_out)
        return prefilled < stepped

    def step(self, coords: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return self.decoder.step(coords, update)

    def prefill(self, Z: torch.Tensor) -> torch.Tensor:
        B = Z.shape[0]
        state = RecurrentState.empty(B, self.V, self.dtype, self.device, layout="shared")
        kernel = "auto" if self.kernel in ("auto", "recurrent") else self.kernel
        Y = mhla(Z.abs() if self.absolute else Z, self.V, self.Q, self.model.scale,
                 self.model.normalise, kernel, state=state, weights=self.weights)
        self.decoder.load_shared(state.tensor, state.length, self.V, self.Q, self.weights)
        return Y.to(self.dtype)


class _DenseStepper:
    """Dense recurrent steps (kernel="recurrent", and tokens that are not binary).

    `absolute` feeds |z|: the stepper then computes E = Σ_h |V_h| S_abs |Q_h| |z|, with
    S_abs = Σ |z||z|ᵀ ≥ |S|, the bound on every output's sum of absolute terms."""

    def __init__(self, V: torch.Tensor, Q: torch.Tensor, model: CompiledModel, batch: int,
                 weights: str, dtype: torch.dtype, device: torch.device, tokens: _Tokens,
                 kernel: str, absolute: bool = False) -> None:
        self.V, self.Q, self.weights, self.kernel = V, Q, weights, kernel
        self.model, self.dtype, self.tokens, self.absolute = model, dtype, tokens, absolute
        self.state = RecurrentState.empty(batch, V, dtype, device)
        self.prepared = prepare(V, Q, weights)

    def prefill_pays(self, prompt: int, fields: int) -> bool:
        """Always: the dense state is the prefill's own state, nothing to fold."""
        return True

    def step(self, coords: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        z = self.tokens.dense(coords, self.dtype)
        if self.absolute:
            z = z.abs()
        active = (update == coords).all(dim=1)  # finished rows come with padding codes
        return step_prepared(self.prepared, self.state, z, self.model.scale,
                             self.model.normalise, active)

    def prefill(self, Z: torch.Tensor) -> torch.Tensor:
        self.state = RecurrentState.empty(Z.shape[0], self.V, self.dtype, Z.device, "shared")
        kernel = "auto" if self.kernel == "recurrent" else self.kernel
        Y = mhla(Z.abs() if self.absolute else Z, self.V, self.Q, self.model.scale,
                 self.model.normalise, kernel, state=self.state, weights=self.weights)
        return Y.to(self.dtype)


class _ReferenceStepper:
    """Recomputes every output from the whole history with the loop definition."""

    def __init__(self, V: torch.Tensor, Q: torch.Tensor, model: CompiledModel,
                 weights: str, dtype: torch.dtype, tokens: _Tokens,
                 absolute: bool = False) -> None:
        self.V = V.to(FORMATS[weights]).to(dtype)
        self.Q = Q.to(FORMATS[weights]).to(dtype)
        self.model, self.dtype, self.tokens, self.absolute = model, dtype, tokens, absolute
        self.history: list[torch.Tensor] = []

    def _dense(self, coords: torch.Tensor) -> torch.Tensor:
        z = self.tokens.dense(coords, self.dtype)
        return z.abs() if self.absolute else z

    def step(self, coords: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        # A finished row's token is masked from the history (its state stops growing).
        self.history.append(self._dense(update))
        Z = torch.stack(self.history, dim=1)
        Z[:, -1] = self._dense(coords)  # it still queries with its own token
        return mhla_reference(Z, self.V, self.Q, self.model.scale, self.model.normalise)[:, -1]

    def prefill(self, Z: torch.Tensor) -> torch.Tensor:
        Z = Z.abs() if self.absolute else Z
        self.history.extend(Z.unbind(1))
        return mhla_reference(Z, self.V, self.Q, self.model.scale, self.model.normalise)


# --------------------------------------------------------------------------------------
# Rollout
# --------------------------------------------------------------------------------------


def rollout(
    model: CompiledModel,
    inputs: Sequence[Sequence[str]],
    *,
    reference: bool = False,
    dtype: str = "fp32",
    record: bool = False,
    batch_size: int | None = None,
    weights: str | None = None,
    device: str | torch.device = "auto",
    kernel: str = "auto",
    on_unresolved: str = "flag",
) -> list[RunResult]:
    """Execute `model` on every input word; results are in input order.

    dtype: state/accumulation format ("fp32", or "fp64" for float64 traces).
    weights: weight format "fp32" | "bf16" | "fp16" (default: the state format).
    device: "cpu" | "cuda" | "auto" (CUDA when present and the batch's decode state is
    big enough to pay for kernel launches, `GPU_MIN_STATE` floats; else CPU).
    kernel: "auto" (coordinate decoder, chunked prefill of long prompts), "recurrent"
    (dense steps), "parallel"/"chunked"/"fla" (the prefill form), "reference"
    (= reference=True: the loop definition at every step, slow).
    on_unresolved: "flag" (margin_resolved=False) or "raise" (PrecisionError).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}' (choose from {', '.join(DTYPES)})")
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel '{kernel}' (choose from {', '.join(KERNELS)})")
    if on_unresolved not in ("flag", "raise"):
        raise ValueError("on_unresolved is 'flag' or 'raise'")
    weights = weights or dtype
    check_weights(model, weights)
    interface = model.interface
    words = [tuple(w) for w in inputs]
    for word in words:
        interface.check_word(word)
    per_row = (model.d + 1) * model.d_out
    if batch_size is None:
        batch_size = max(1, min(4096, STATE_BUDGET // max(per_row, 1)))
    target = resolve_device(device)
    if device == "auto" and min(batch_size, len(words)) * per_row < GPU_MIN_STATE:
        target = torch.device("cpu")  # a few small steps: launches would dominate
    # Similar lengths share a batch: fewer steps spent on finished rows.
    order = sorted(range(len(words)), key=lambda i: -len(words[i]))
    results: list[RunResult | None] = [None] * len(words)
    reference = reference or kernel == "reference"
    with single_thread(target.type == "cpu"), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = _rollout_batch(model, [words[i] for i in chosen], reference,
                                   DTYPES[dtype], weights, record, target, kernel)
            for i, result in zip(chosen, batch, strict=True):
                results[i] = result
    final = [r for r in results if r is not None]
    if on_unresolved == "raise":
        bad = [r for r in final if not r.margin_resolved]
        if bad:
            raise PrecisionError(
                f"{len(bad)} of {len(final)} runs have a decode margin that {weights} weights "
                f"cannot resolve (smallest {min(r.margin for r in bad):.3g}); "
                "run with --weights fp32")
    return final


def _rollout_batch(
    model: CompiledModel,
    words: list[tuple[str, ...]],
    reference: bool,
    dtype: torch.dtype,
    weights: str,
    record: bool,
    device: torch.device,
    kernel: str,
) -> list[RunResult]:
    interface = model.interface
    batch, d = len(words), interface.d
    V, Q = model.V.to(device), model.Q.to(device)
    tokens = _Tokens(interface, words, device)
    prepared = prepare(V, Q, weights)
    nonnegative = prepared.nonnegative and tokens.nonnegative  # then no output cancels
    decode = _Decode(interface, nonnegative, device)

    def stepper(V: torch.Tensor, Q: torch.Tensor, absolute: bool = False):
        if reference:
            return _ReferenceStepper(V, Q, model, weights, dtype, tokens, absolute)
        # |z| of a signed token is not the sum of its codes' |e_c| (e_(a,b) − e_(a,b) = 0),
        # so the rounding bound of signed tokens runs dense, on the summed token.
        coordinates = tokens.binary or (tokens.signed_units and not absolute)
        if kernel == "recurrent" or not coordinates:
            return _DenseStepper(V, Q, model, batch, weights, dtype, device, tokens, kernel,
                                 absolute)
        return _SparseStepper(V, Q, model, batch, weights, dtype, device, kernel,
                              signed=tokens.signed_units, absolute=absolute)

    main = stepper(V, Q)
    rounding = weight_rounding(weights)
    # E = Σ|V| S_abs |Q| |z|: needed only when low-precision terms can cancel.
    bound = stepper(V.abs(), Q.abs(), absolute=True) if rounding and not nonnegative else None

    active = torch.ones(batch, dtype=torch.bool, device=device)
    halted = torch.zeros(batch, dtype=torch.bool, device=device)
    pointer = 0
    decoded: dict[str, torch.Tensor] | None = None
    answers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                        torch.Tensor | None]] = []
    recorded_coords: list[torch.Tensor] = []
    recorded_y: list[torch.Tensor] = []

    def finish(y: torch.Tensor, e: torch.Tensor | None, answer: bool) -> None:
        nonlocal decoded
        indices, margin, magnitude = decode(y)
        decoded = {name: indices[:, j] for j, name in enumerate(decode.names)}
        if answer:
            answers.append((indices, margin, magnitude, active,
                            None if e is None else e.amax(dim=1)))

    def advance(plan: _SpecPlan, answer: bool) -> None:
        """One token per row: embed, step the state (finished rows padded), decode."""
        nonlocal active, pointer
        if plan.uses_input:
            active = active & (tokens.lengths > pointer)
        coords = tokens.coords(plan, decoded, pointer)
        update = torch.where(active[:, None], coords, d)
        pointer += plan.uses_input
        y = main.step(coords, update)
        e = bound.step(coords, update) if bound is not None else None
        if record:
            recorded_coords.append(coords)
            recorded_y.append(y)
        finish(y, e, answer=answer)

    prompt = tokens.prompt
    prefill = (
        not reference and len(prompt) >= PREFILL_MIN and kernel != "recurrent"
        and not any(plan.uses_output for plan in prompt)
        and main.prefill_pays(len(prompt), max(len(p.fields) for p in prompt))
    )
    if prefill:
        columns, masks = [], []
        for plan in prompt:
            if plan.uses_input:
                active = active & (tokens.lengths > pointer)
            columns.append(tokens.coords(plan, None, pointer))
            masks.append(active)
            pointer += plan.uses_input
        coords = _stack_codes(columns, d)  # (B, P, F)
        keep = torch.stack(masks, dim=1)[..., None]
        Z = tokens.dense(torch.where(keep, coords, d), dtype)
        Y = main.prefill(Z)
        E = bound.prefill(Z) if bound is not None else None
        if record:
            recorded_coords.extend(coords.unbind(1))
            recorded_y.extend(Y.unbind(1))
        finish(Y[:, -1], None if E is None else E[:, -1], answer=True)
    else:
        for position, plan in enumerate(prompt):
            advance(plan, answer=position == len(prompt) - 1)

    halt_rules = [
        (name, interface.output_field(name).values.index(value))
        for name, value in interface.halt_on
    ]
    limit = interface.max_steps if interface.max_steps is not None else math.inf
    cycle = tokens.feed
    if not (any(plan.uses_input for plan in cycle) or halt_rules or math.isfinite(limit)):
        raise ValueError("the interface never stops: its feedback reads no input and it "
                         "has neither a halting rule nor max_steps")
    step = 0
    while cycle and step < limit:
        feed = cycle[step % len(cycle)]
        if halt_rules and decoded is not None:
            for name, index in halt_rules:
                now = active & (decoded[name] == index)
                halted = halted | now
                active = active & ~now
        if not bool(active.any()):
            break
        advance(feed, answer=True)
        step += 1

    return _collect(interface, words, answers, active, halted, dtype, weights, rounding,
                    tokens, recorded_coords if record else None,
                    recorded_y if record else None, len(prompt))


def _stack_codes(columns: list[torch.Tensor], d: int) -> torch.Tensor:
    """Stack per-position codes (B, F_i) into (B, P, max F), padding with d ("nothing"):
    tokens of different specs may have different numbers of fields."""
    width = max(c.shape[1] for c in columns)
    return torch.stack([torch.nn.functional.pad(c, (0, width - c.shape[1]), value=d)
                        for c in columns], dim=1)


def _collect(
    interface: Interface,
    words: list[tuple[str, ...]],
    answers: list,
    active: torch.Tensor,
    halted: torch.Tensor,
    dtype: torch.dtype,
    weights: str,
    rounding: float,
    tokens: _Tokens,
    recorded_coords: list[torch.Tensor] | None,
    recorded_y: list[torch.Tensor] | None,
    prompt_length: int,
) -> list[RunResult]:
    """Turn per-step batch tensors into one RunResult per input (vectorised, then rows)."""
    indices = torch.stack([a[0] for a in answers], dim=1).cpu()  # (B, answers, fields)
    margins = torch.stack([a[1] for a in answers], dim=1).cpu()
    magnitude = torch.stack([a[2] for a in answers], dim=1).cpu()
    alive = torch.stack([a[3] for a in answers], dim=1).cpu()
    threshold = resolution(dtype, magnitude)
    if rounding:
        bound = magnitude if answers[0][4] is None else torch.stack(
            [a[4] for a in answers], dim=1).cpu()
        threshold = threshold + 2.0 * rounding * bound
    resolved = (margins > threshold) | ~alive
    margins = margins.masked_fill(~alive, math.inf)
    counts = alive.sum(dim=1)
    steps = (counts - alive[:, 0].long()).tolist()
    min_margin = margins.min(dim=1).values.tolist()
    all_resolved = resolved.all(dim=1).tolist()
    still_active, was_halted = active.cpu().tolist(), halted.cpu().tolist()
    values = [np.array(field.values, dtype=object) for field in interface.output_fields]
    index_rows = indices.numpy()
    token_rows = output_rows = None
    if recorded_coords is not None and recorded_y is not None:
        coords = _stack_codes(recorded_coords, tokens.d)
        token_rows = tokens.dense(coords, dtype).cpu().numpy()
        output_rows = torch.stack(recorded_y, dim=1).to(dtype).cpu().numpy()
    results = []
    for row, word in enumerate(words):
        count = int(counts[row])
        decoded = {
            field.name: tuple(values[j][index_rows[row, :count, j]].tolist())
            for j, field in enumerate(interface.output_fields)
        }
        stopped = "halt" if was_halted[row] else ("max_steps" if still_active[row]
                                                  else "input")
        length = prompt_length - 1 + count
        results.append(
            RunResult(
                input=word,
                decoded=decoded,
                margin=float(min_margin[row]),
                margin_resolved=bool(all_resolved[row]),
                steps=int(steps[row]),
                stopped_by=stopped,
                tokens=None if token_rows is None else token_rows[row, :length].copy(),
                outputs=None if output_rows is None else output_rows[row, :length].copy(),
            )
        )
    return results


def run(model: CompiledModel, word: Sequence[str], **options: object) -> RunResult:
    """Execute one input (see `rollout`)."""
    if not isinstance(word, (list, tuple)):
        raise InputError("an input word is a sequence of symbols")
    return rollout(model, [word], **options)[0]
