"""Hand-built artifacts for runtime tests (the runtime is tested without the compiler)."""

from __future__ import annotations

import torch

from lat.runtime.interface import Interface, OutputField, TokenField
from lat.runtime.model import CompiledModel


def mod3_counter() -> CompiledModel:
    """Counts `a` symbols mod 3 (ignores `b`): a 3-state automaton built by hand."""
    states, alphabet = ("r0", "r1", "r2"), ("a", "b")
    interface = Interface(
        kind="automaton", program="mod3", input_alphabet=alphabet,
        token_fields=(TokenField("bos", "const"),
                      TokenField("state_symbol", "product", states, alphabet)),
        output_fields=(OutputField("state", states), OutputField("accept", ("reject", "accept"))),
        prompt=({"bos": ()},), feed={"state_symbol": ("output:state", "input")},
        result_field="accept", trace_field="state",
    )
    V = torch.zeros(1, interface.d_out, interface.d)
    V[0, 0, 0] = V[0, 4, 0] = 1.0  # bos -> r0, accept
    for i, _ in enumerate(states):
        for j, symbol in enumerate(alphabet):
            target = (i + 1) % 3 if symbol == "a" else i
            column = 1 + i * 2 + j
            V[0, target, column] = 1.0
            V[0, 3 + int(target == 0), column] = 1.0
    return CompiledModel(V, torch.eye(interface.d)[None], interface)


def countdown(max_steps: int | None = None) -> CompiledModel:
    """Ignores its input, walks s0 → s1 → s2 → halt, and halts on `halt`."""
    states = ("s0", "s1", "s2", "halt")
    interface = Interface(
        kind="machine", program="countdown", input_alphabet=("x",),
        token_fields=(TokenField("bos", "const"), TokenField("state", "onehot", states)),
        output_fields=(OutputField("state", states),),
        prompt=({"bos": ()},), feed={"state": ("output:state",)},
        result_field="state", trace_field="state",
        halt_on=(("state", "halt"),), max_steps=max_steps,
    )
    V = torch.zeros(1, 4, 5)
    V[0, 0, 0] = 1.0
    for i in range(4):
        V[0, min(i + 1, 3), 1 + i] = 1.0
    return CompiledModel(V, torch.eye(5)[None], interface)
