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


def near_tie(gap: float = 0.002) -> CompiledModel:
    """mod3_counter whose runner-up state is only `gap` below the winner on every token:
    fp32 resolves it, bf16 (unit roundoff 2^-9) cannot."""
    model = mod3_counter()
    V = model.V.clone()
    for column in range(model.d):
        block = V[0, :3, column]
        if block.max() > 0:
            winner = int(block.argmax())
            block[(winner + 1) % 3] = 1.0 - gap
    return CompiledModel(V, model.Q, model.interface)


def mixed_signs() -> CompiledModel:
    """mod3_counter with Q = 2I - 1·(the bos coordinate's row and column), V shifted by -1
    on the accept block: negative weights, same decisions (outputs can cancel)."""
    model = mod3_counter()
    V = model.V.clone()
    V[0, 3:5] -= 0.25
    Q = 2.0 * torch.eye(model.d)[None]
    return CompiledModel(V, Q, model.interface)


def long_prompt(prefix: int = 20) -> CompiledModel:
    """mod3_counter behind a `prefix`-token preamble (bos, then `pad` tokens that attend to
    nothing): exercises the chunked prefill of prompts before the decode loop."""
    base = mod3_counter()
    states, alphabet = ("r0", "r1", "r2"), ("a", "b")
    interface = Interface(
        kind="automaton", program="mod3_long", input_alphabet=alphabet,
        token_fields=(TokenField("pad", "const"), TokenField("bos", "const"),
                      TokenField("state_symbol", "product", states, alphabet)),
        output_fields=base.interface.output_fields,
        prompt=tuple({"pad": ()} for _ in range(prefix - 1)) + ({"bos": ()},),
        feed={"state_symbol": ("output:state", "input")},
        result_field="accept", trace_field="state",
    )
    V = torch.cat([torch.zeros(1, base.d_out, 1), base.V], dim=2)
    return CompiledModel(V, torch.eye(interface.d)[None], interface)


def embedded_memory() -> CompiledModel:
    """A 3-key memory with signed, non-orthogonal key vectors in R^3 and an `other` slot:
    y = V u_q = Σ_k ⟨u_k, u_q⟩ e_value(k). Dense, mixed-sign tokens; empty feedback."""
    keys = ("k0", "k1", "k2", "<other>")
    vectors = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (-0.6, 0.0, -0.8))
    value_of = (0, 1, 0, 1)  # k0 → x, k1 → y, k2 → x, other → y
    interface = Interface(
        kind="memory", program="embedded", input_alphabet=keys[:3],
        token_fields=(TokenField("key", "embedding", keys, vectors=vectors),),
        output_fields=(OutputField("value", ("x", "y")),),
        prompt=({"key": ("input",)},), feed={}, result_field="value", max_steps=0,
        input_other="<other>",
    )
    V = torch.zeros(1, 2, 3)
    for vector, value in zip(vectors, value_of, strict=True):
        V[0, value] += torch.tensor(vector)
    return CompiledModel(V, torch.eye(3)[None], interface)


def cancelling_heads(weight: float = 100.0) -> CompiledModel:
    """mod3_counter split over two heads that cancel: V_1 = V + wM, V_2 = -wM (Q = I).

    Exact arithmetic computes the same outputs; rounded to bf16, V_1 loses V's detail
    (error ~ u·w) while |y| stays small — only the Σ|V| S |Q| z bound sees it."""
    model = mod3_counter()
    M = torch.rand(1, model.d_out, model.d, generator=torch.Generator().manual_seed(0))
    V = torch.cat([model.V + weight * M, -weight * M])
    Q = torch.eye(model.d)[None].repeat(2, 1, 1)
    return CompiledModel(V, Q, model.interface)
