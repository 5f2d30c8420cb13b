"""Batched autoregressive execution of an artifact: prompt, step, decode, feed back, halt.

`rollout` runs many inputs at once. Every sequence in a batch advances one token per
step; the token of each sequence is built from its own decoded outputs and input pointer
with tensor indexing (no per-sequence Python work inside the step loop). A sequence stops
when a feedback step needs an input symbol and its input is exhausted, when an output field
decodes to a halting value (`halt_on`), or after `max_steps` feedback steps.

How a step runs. A token is the sum of one basis vector per token field, so the step
loop carries integer *codes* (`tokens.Tokens`), not vectors: a token spec is compiled once into
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
from lat.runtime.fast import run_single
from lat.runtime.forms import FORMATS, KERNELS
from lat.runtime.forms.sparse import densify, prefers_sparse, stored_values
from lat.runtime.interface import Interface
from lat.runtime.model import CompiledModel
from lat.runtime.steppers import (
    DenseStepper,
    ReferenceStepper,
    SparseStepper,
    SparseWeightsStepper,
)
from lat.runtime.tokens import Decode, SpecPlan, Tokens

# Floats of decode state a batch may hold at once; bigger batches are split.
STATE_BUDGET = 1 << 25
DTYPES = {"fp32": torch.float32, "fp64": torch.float64}
WEIGHT_FORMATS = ("fp32", "bf16", "fp16", "fp64")
PREFILL_MIN = 16  # prompts at least this long (and free of feedback) may be prefilled
GPU_MIN_STATE = 1 << 22  # "auto" runs a batch on CUDA only above this many state floats


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
    for name, tensor in (("V", stored_values(model.V)), ("Q", stored_values(model.Q))):
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
    history: bool = True,
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
    history: keep the decoded outputs of every answer position (default); False keeps
    only the last position's (`decoded` holds one value per field), so memory does not
    grow with the input (a long stream). Margins are checked at every position either way.
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
    sparse = kernel == "sparse" or (kernel == "auto" and not reference
                                    and prefers_sparse(model.V, model.Q))
    # the sparse decoder's state grows with the entries written; what a row holds at
    # once is its output and decode (a few d_out vectors)
    per_row = 8 * model.d_out if sparse else (model.d + 1) * model.d_out
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
                                   DTYPES[dtype], weights, record, target, kernel, history,
                                   sparse)
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
    history: bool = True,
    sparse: bool = False,
) -> list[RunResult]:
    interface = model.interface
    batch, d = len(words), interface.d
    V, Q = model.V.to(device), model.Q.to(device)
    tokens = Tokens(interface, words, device)
    # then no output cancels (as `prepare(...).nonnegative`, without preparing the weights)
    nonnegative = bool((stored_values(V) >= 0).all() and (stored_values(Q) >= 0).all()) \
        and tokens.nonnegative
    decode = Decode(interface, nonnegative, device)
    if sparse and not (tokens.binary or tokens.signed_units):
        raise ValueError("the sparse form runs tokens of unit vectors only; this interface "
                         "has embedding fields")
    if not sparse:  # every other form multiplies dense matrices
        V, Q = densify(V), densify(Q)

    def stepper(V: torch.Tensor, Q: torch.Tensor, absolute: bool = False):
        if sparse:
            return SparseWeightsStepper(V, Q, model, batch, weights, dtype, device,
                                        signed=tokens.signed_units, absolute=absolute)
        if reference:
            return ReferenceStepper(V, Q, model, weights, dtype, tokens, absolute)
        # |z| of a signed token is not the sum of its codes' |e_c| (e_(a,b) − e_(a,b) = 0),
        # so the rounding bound of signed tokens runs dense, on the summed token.
        coordinates = tokens.binary or (tokens.signed_units and not absolute)
        if kernel == "recurrent" or not coordinates:
            return DenseStepper(V, Q, model, batch, weights, dtype, device, tokens, kernel,
                                absolute)
        return SparseStepper(V, Q, model, batch, weights, dtype, device, kernel,
                             signed=tokens.signed_units, absolute=absolute)

    main = stepper(V, Q)
    rounding = weight_rounding(weights)
    # E = Σ|V| S_abs |Q| |z|: needed only when low-precision terms can cancel.
    bound = None
    if rounding and not nonnegative:
        bound = stepper(V, Q, absolute=True) if sparse else stepper(V.abs(), Q.abs(),
                                                                     absolute=True)

    halt_rules = [
        (name, interface.output_field(name).values.index(value))
        for name, value in interface.halt_on
    ]
    limit = interface.max_steps if interface.max_steps is not None else math.inf
    cycle = tokens.feed
    if not (any(plan.uses_input for plan in cycle) or halt_rules or math.isfinite(limit)):
        raise ValueError("the interface never stops: its feedback reads no input and it "
                         "has neither a halting rule nor max_steps")
    prompt = tokens.prompt
    prefill = (
        not reference and len(prompt) >= PREFILL_MIN and kernel != "recurrent"
        and not any(plan.uses_output for plan in prompt)
        and main.prefill_pays(len(prompt), max(len(p.fields) for p in prompt))
    )
    if (batch == 1 and device.type == "cpu" and bound is None and not prefill
            and (isinstance(main, SparseWeightsStepper) or (
                isinstance(main, SparseStepper)
                and (main.decoder.unit or main.decoder.sparse)))
            and sum(plan.uses_input for plan in prompt) <= len(words[0])):
        # one sequence on the CPU: plain Python and numpy, no per-op torch overhead
        single = run_single(tokens, main.decoder, interface, decode.nonnegative, words[0],
                            dtype, record, history, rounding)
        return [_single_result(interface, words[0], single, tokens, dtype, len(prompt))]

    active = torch.ones(batch, dtype=torch.bool, device=device)
    halted = torch.zeros(batch, dtype=torch.bool, device=device)
    pointer = 0
    decoded: dict[str, torch.Tensor] | None = None
    answers = _Answers(batch, dtype, rounding, history, device)
    recorded_coords: list[torch.Tensor] = []
    recorded_y: list[torch.Tensor] = []

    def finish(y: torch.Tensor, e: torch.Tensor | None, answer: bool) -> None:
        nonlocal decoded
        indices, margin, magnitude = decode(y)
        decoded = {name: indices[:, j] for j, name in enumerate(decode.names)}
        if answer:
            answers.add(indices, margin, magnitude, active,
                        None if e is None else e.amax(dim=1))

    def advance(plan: SpecPlan, answer: bool) -> None:
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

    return _collect(interface, words, answers, active, halted, dtype, tokens,
                    recorded_coords if record else None,
                    recorded_y if record else None, len(prompt))


class _Answers:
    """Per-answer decodes folded as they come: the smallest margin, whether every margin
    resolved, how many answers each row was alive for, and the decoded indices (all of
    them with `history`, else only each row's last alive one)."""

    def __init__(self, batch: int, dtype: torch.dtype, rounding: float, history: bool,
                 device: torch.device) -> None:
        self.dtype, self.rounding, self.history = dtype, rounding, history
        self.indices: list[torch.Tensor] = []
        self.last: torch.Tensor | None = None
        self.first_alive: torch.Tensor | None = None
        self.count = torch.zeros(batch, dtype=torch.long, device=device)
        self.margin: torch.Tensor | None = None
        self.resolved = torch.ones(batch, dtype=torch.bool, device=device)

    def add(self, indices: torch.Tensor, margin: torch.Tensor, magnitude: torch.Tensor,
            alive: torch.Tensor, e: torch.Tensor | None) -> None:
        threshold = resolution(self.dtype, magnitude)
        if self.rounding:
            threshold = threshold + 2.0 * self.rounding * (magnitude if e is None else e)
        self.resolved &= (margin > threshold) | ~alive
        margin = margin.masked_fill(~alive, math.inf)
        self.margin = margin if self.margin is None else torch.minimum(self.margin, margin)
        self.count += alive
        if self.first_alive is None:
            self.first_alive = alive
        if self.history:
            self.indices.append(indices)
        else:
            self.last = indices if self.last is None else torch.where(
                alive[:, None], indices, self.last)


def _stack_codes(columns: list[torch.Tensor], d: int) -> torch.Tensor:
    """Stack per-position codes (B, F_i) into (B, P, max F), padding with d ("nothing"):
    tokens of different specs may have different numbers of fields."""
    width = max(c.shape[1] for c in columns)
    return torch.stack([torch.nn.functional.pad(c, (0, width - c.shape[1]), value=d)
                        for c in columns], dim=1)


def _collect(
    interface: Interface,
    words: list[tuple[str, ...]],
    answers: _Answers,
    active: torch.Tensor,
    halted: torch.Tensor,
    dtype: torch.dtype,
    tokens: Tokens,
    recorded_coords: list[torch.Tensor] | None,
    recorded_y: list[torch.Tensor] | None,
    prompt_length: int,
) -> list[RunResult]:
    """Turn the folded answers into one RunResult per input (vectorised, then rows)."""
    if answers.history:
        indices = torch.stack(answers.indices, dim=1).cpu()  # (B, answers, fields)
    else:
        indices = answers.last[:, None].cpu()  # (B, 1, fields)
    counts = answers.count.cpu()
    steps = (counts - answers.first_alive.cpu().long()).tolist()
    min_margin = answers.margin.cpu().tolist()
    all_resolved = answers.resolved.cpu().tolist()
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
        kept = count if answers.history else min(count, 1)
        decoded = {
            field.name: tuple(values[j][index_rows[row, :kept, j]].tolist())
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


def _single_result(interface: Interface, word: tuple[str, ...], single: dict[str, object],
                   tokens: Tokens, dtype: torch.dtype, prompt_length: int) -> RunResult:
    """The RunResult of `fast.run_single` (the same fields `_collect` fills)."""
    kept = single["kept"]
    decoded = {field.name: tuple(field.values[row[j]] for row in kept)
               for j, field in enumerate(interface.output_fields)}
    token_rows = output_rows = None
    if single["coords"]:
        codes = single["coords"]
        coords = _stack_codes([torch.tensor([c], dtype=torch.long) for c in codes], tokens.d)
        token_rows = tokens.dense(coords[0], dtype).numpy()
        output_rows = np.stack(single["outputs"])
    return RunResult(input=word, decoded=decoded, margin=float(single["margin"]),
                     margin_resolved=bool(single["resolved"]), steps=int(single["steps"]),
                     stopped_by=str(single["stopped_by"]), tokens=token_rows,
                     outputs=output_rows)


def run(model: CompiledModel, word: Sequence[str], **options: object) -> RunResult:
    """Execute one input (see `rollout`)."""
    if not isinstance(word, (list, tuple)):
        raise InputError("an input word is a sequence of symbols")
    return rollout(model, [word], **options)[0]
