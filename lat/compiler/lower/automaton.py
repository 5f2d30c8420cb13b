"""Lower a finite automaton to one linear-attention head (weights placement).

Token layout (d = 1 + |Q|·|Σ|): a constant `bos` coordinate, then one-hot of the pair
(state, symbol). The prompt is the single `bos` token; each input symbol a_t is fed as the
token (q_{t-1}, a_t), where q_{t-1} is the state the model itself decoded one position
earlier.

One head with Q = I. Tokens are orthonormal, so S_t z_t = c_t z_t where c_t ≥ 1 counts the
earlier copies of z_t, and y_t = c_t · V z_t. V sends `bos` to (q_0, accept(q_0)) and each
pair (q, a) to (δ(q, a), accept(δ(q, a))): the transition table and the accepting set live
in V alone. Every output block is c_t times a one-hot, hence the decode margin is c_t ≥ 1.
"""

from __future__ import annotations

import numpy as np

from lat.compiler.ir import CheckedAutomaton
from lat.compiler.lower import Lowered
from lat.runtime.interface import Interface, OutputField, TokenField

VERDICTS = ("reject", "accept")


def automaton_interface(a: CheckedAutomaton) -> Interface:
    """The token and output layout of a compiled automaton."""
    return Interface(
        kind="automaton",
        program=a.name,
        input_alphabet=tuple(a.alphabet),
        token_fields=(
            TokenField("bos", "const"),
            TokenField("state_symbol", "product", tuple(a.states), tuple(a.alphabet)),
        ),
        output_fields=(OutputField("state", tuple(a.states)), OutputField("accept", VERDICTS)),
        prompt=({"bos": ()},),
        feed={"state_symbol": ("output:state", "input")},
        result_field="accept",
        trace_field="state",
    )


def lower_automaton(a: CheckedAutomaton) -> Lowered:
    interface = automaton_interface(a)
    d, d_out = interface.d, interface.d_out
    state_index = {q: i for i, q in enumerate(a.states)}
    accept_offset = len(a.states)
    pair_offset = interface.token_offset("state_symbol")
    pairs = interface.token_field("state_symbol")

    def write(column: int, state: str) -> None:
        V[0, state_index[state], column] = 1.0
        V[0, accept_offset + int(state in a.accept), column] = 1.0

    V = np.zeros((1, d_out, d), dtype=np.float32)
    write(interface.token_offset("bos"), a.start)
    for (state, symbol), target in a.transition_table.items():
        write(pair_offset + pairs.index((state, symbol)), target)
    Q = np.eye(d, dtype=np.float32)[None]
    return Lowered(
        V=V,
        Q=Q,
        interface=interface,
        decode_margin=1.0,
        margin_note="one-hot tokens and Q = I: every output block is c·e_target with c ≥ 1",
    )
