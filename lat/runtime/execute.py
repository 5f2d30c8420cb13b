"""Batched autoregressive execution of an artifact: prompt, step, decode, feed back, halt.

`rollout` runs many inputs at once. Every sequence in a batch advances one token per
step; the token of each sequence is built from its own decoded outputs and input pointer
with tensor indexing (no per-sequence Python work inside the step loop). A sequence stops
when a feedback step needs an input symbol and its input is exhausted, when an output field
decodes to a halting value (`halt_on`), or after `max_steps` feedback steps.

Every decode records its margin (top-1 minus top-2 of each output block). A margin that
the number format cannot resolve — at or below a few units of rounding at the output's
magnitude — is flagged, so that a run never returns a silently wrong answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lat.runtime.errors import InputError
from lat.runtime.interface import Interface, TokenSpec
from lat.runtime.kernels import RecurrentState, mhla_reference, recurrent_step
from lat.runtime.model import CompiledModel

# Tokens of state a batch may hold at once (floats); bigger batches are split.
STATE_BUDGET = 1 << 25
DTYPES = {"fp32": torch.float32, "fp64": torch.float64}


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
    """The smallest margin the format resolves at this output magnitude.

    Accumulated rounding in a length-T sum stays far below 64 units in the last place of
    the largest output for these one-hot programs; a margin must clear that.
    """
    return 64.0 * torch.finfo(dtype).eps * magnitude.clamp(min=1.0)


def _source_index(
    interface: Interface,
    values: tuple[str, ...],
    source: str,
    decoded: dict[str, torch.Tensor],
    symbol: torch.Tensor | None,
) -> torch.Tensor | int:
    """Index within `values` named by one source, per batch row (or a constant)."""
    if source == "input":
        assert symbol is not None
        return symbol
    if source.startswith("output:"):
        name = source[len("output:"):]
        field = interface.output_field(name)
        if field.values == values:
            return decoded[name]
        # Re-embed by value: map the output field's value order onto this field's.
        mapping = torch.tensor([values.index(v) if v in values else -1 for v in field.values])
        return mapping[decoded[name]]
    if source.startswith("const:"):
        return values.index(source[len("const:"):])
    raise ValueError(f"unknown token source '{source}'")


def _build_tokens(
    interface: Interface,
    spec: TokenSpec,
    batch: int,
    decoded: dict[str, torch.Tensor],
    symbol: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Embed one token per batch row from a token spec (vectorised over the batch)."""
    z = torch.zeros(batch, interface.d, dtype=dtype)
    rows = torch.arange(batch)
    for name, sources in spec.items():
        field = interface.token_field(name)
        offset = interface.token_offset(name)
        if field.kind == "const":
            z[:, offset] = 1.0
            continue
        if field.kind == "product":
            first = _source_index(interface, field.values, sources[0], decoded, symbol)
            second = _source_index(interface, field.values2, sources[1], decoded, symbol)
            index = torch.as_tensor(first) * len(field.values2) + torch.as_tensor(second)
        else:
            index = torch.as_tensor(
                _source_index(interface, field.values, sources[0], decoded, symbol)
            )
        z[rows, offset + index.expand(batch)] = 1.0
    return z


def _decode(interface: Interface, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Argmax of each output block, and the smallest top-1 minus top-2 gap per row."""
    decoded, margins = {}, []
    for field, offset in interface.output_slices():
        block = y[:, offset : offset + field.width]
        top = torch.topk(block, k=min(2, field.width), dim=1)
        decoded[field.name] = top.indices[:, 0]
        gap = top.values[:, 0] - top.values[:, 1] if field.width > 1 else top.values[:, 0]
        margins.append(gap)
    return decoded, torch.stack(margins, dim=1).min(dim=1).values


def _uses_input(spec: TokenSpec) -> bool:
    return any("input" in sources for sources in spec.values())


def rollout(
    model: CompiledModel,
    inputs: Sequence[Sequence[str]],
    *,
    reference: bool = False,
    dtype: str = "fp32",
    record: bool = False,
    batch_size: int | None = None,
) -> list[RunResult]:
    """Execute `model` on every input word; results are in input order.

    `reference=True` recomputes every output from the whole prefix with the loop form of
    the definition (slow; the ground truth the fast path is tested against).
    """
    interface = model.interface
    for word in inputs:
        interface.check_word(word)
    if batch_size is None:
        per_row = min(model.d * model.d, model.heads * model.d_out * model.d)
        batch_size = max(1, min(4096, STATE_BUDGET // max(per_row, 1)))
    results: list[RunResult] = []
    for start in range(0, len(inputs), batch_size):
        chunk = [tuple(w) for w in inputs[start : start + batch_size]]
        results.extend(_rollout_batch(model, chunk, reference, DTYPES[dtype], record))
    return results


def _rollout_batch(
    model: CompiledModel,
    words: list[tuple[str, ...]],
    reference: bool,
    dtype: torch.dtype,
    record: bool,
) -> list[RunResult]:
    interface = model.interface
    batch = len(words)
    V = model.V.to(dtype)
    Q = model.Q.to(dtype)
    alphabet_index = {s: i for i, s in enumerate(interface.input_alphabet)}
    lengths = torch.tensor([len(w) for w in words])
    longest = int(lengths.max()) if batch else 0
    symbols = torch.zeros(batch, longest + 1, dtype=torch.long)
    for row, word in enumerate(words):
        symbols[row, : len(word)] = torch.tensor([alphabet_index[s] for s in word],
                                                 dtype=torch.long)
    pointer = torch.zeros(batch, dtype=torch.long)
    rows = torch.arange(batch)

    state = RecurrentState.empty(batch, V, dtype)
    history: list[torch.Tensor] = []  # tokens, for the reference form and recording
    raw_outputs: list[torch.Tensor] = []
    decoded_steps: list[dict[str, torch.Tensor]] = []
    margin_steps: list[torch.Tensor] = []
    resolved_steps: list[torch.Tensor] = []
    active = torch.ones(batch, dtype=torch.bool)
    alive_steps: list[torch.Tensor] = []  # which rows produced an answer at each step
    decoded: dict[str, torch.Tensor] = {}

    def advance(spec: TokenSpec, answer: bool) -> None:
        nonlocal decoded
        needs_input = _uses_input(spec)
        if needs_input:
            exhausted = pointer >= lengths
            active.logical_and_(~exhausted)
            symbol = symbols[rows, pointer.clamp(max=longest)]
        else:
            symbol = None
        z = _build_tokens(interface, spec, batch, decoded, symbol, dtype)
        if needs_input:
            pointer.add_(active.long())
        if reference:
            history.append(z)
            Z = torch.stack(history, dim=1)
            y = mhla_reference(Z, V, Q, model.scale, model.normalise)[:, -1]
        else:
            y = recurrent_step(state, z, V, Q, model.scale, model.normalise, active)
            if record:
                history.append(z)
        if record:
            raw_outputs.append(y)
        decoded, margins = _decode(interface, y)
        resolved = margins > resolution(dtype, y.abs().max(dim=1).values)
        if answer:
            decoded_steps.append(decoded)
            margin_steps.append(margins)
            resolved_steps.append(resolved)
            alive_steps.append(active.clone())

    prompt = interface.prompt
    for position, spec in enumerate(prompt):
        advance(spec, answer=position == len(prompt) - 1)
    steps = torch.zeros(batch, dtype=torch.long)
    stopped_by = ["max_steps"] * batch
    halt_rules = [
        (name, interface.output_field(name).values.index(value))
        for name, value in interface.halt_on
    ]
    limit = interface.max_steps if interface.max_steps is not None else math.inf
    step = 0
    while bool(active.any()) and step < limit:
        for name, index in halt_rules:
            halted = active & (decoded[name] == index)
            for row in torch.nonzero(halted).flatten().tolist():
                stopped_by[row] = "halt"
            active.logical_and_(~halted)
        if not bool(active.any()):
            break
        before = active.clone()
        advance(interface.feed, answer=True)
        newly_out = before & ~active
        for row in torch.nonzero(newly_out).flatten().tolist():
            stopped_by[row] = "input"
        steps.add_(active.long())
        step += 1

    return _collect(interface, words, decoded_steps, margin_steps, resolved_steps,
                    alive_steps, steps, stopped_by, history if record else None,
                    raw_outputs if record else None, len(prompt))


def _collect(
    interface: Interface,
    words: list[tuple[str, ...]],
    decoded_steps: list[dict[str, torch.Tensor]],
    margin_steps: list[torch.Tensor],
    resolved_steps: list[torch.Tensor],
    alive_steps: list[torch.Tensor],
    steps: torch.Tensor,
    stopped_by: list[str],
    history: list[torch.Tensor] | None,
    raw_outputs: list[torch.Tensor] | None,
    prompt_length: int,
) -> list[RunResult]:
    """Turn per-step batch tensors into one RunResult per input."""
    alive = torch.stack(alive_steps, dim=1)  # (B, answers)
    margins = torch.stack(margin_steps, dim=1).masked_fill(~alive, math.inf)
    resolved = torch.stack(resolved_steps, dim=1) | ~alive
    values = {
        field.name: torch.stack([d[field.name] for d in decoded_steps], dim=1)
        for field in interface.output_fields
    }
    tokens = torch.stack(history, dim=1) if history else None
    outputs = torch.stack(raw_outputs, dim=1) if raw_outputs else None
    results = []
    for row, word in enumerate(words):
        count = int(alive[row].sum())
        decoded = {
            field.name: tuple(field.values[i] for i in values[field.name][row, :count].tolist())
            for field in interface.output_fields
        }
        length = prompt_length - 1 + count
        results.append(
            RunResult(
                input=word,
                decoded=decoded,
                margin=float(margins[row].min()),
                margin_resolved=bool(resolved[row].all()),
                steps=int(steps[row]),
                stopped_by=stopped_by[row],
                tokens=None if tokens is None else tokens[row, :length].numpy().copy(),
                outputs=None if outputs is None else outputs[row, :length].numpy().copy(),
            )
        )
    return results


def run(model: CompiledModel, word: Sequence[str], **options: object) -> RunResult:
    """Execute one input (see `rollout`)."""
    if not isinstance(word, (list, tuple)):
        raise InputError("an input word is a sequence of symbols")
    return rollout(model, [word], **options)[0]
