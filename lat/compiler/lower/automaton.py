"""Lower a finite automaton to one linear-attention head (weights placement).

Token layout (d = 1 + |Q|·|Σ|): a constant `bos` coordinate, then one-hot of the pair
(state, symbol). The prompt is the single `bos` token; each input symbol a_t is fed as the
token (q_{t-1}, a_t), where q_{t-1} is the state the model itself decoded one position
earlier.

One head with Q = I. Tokens are orthonormal, so S_t z_t = c_t z_t where c_t ≥ 1 counts the
earlier copies of z_t, and y_t = c_t · V z_t. V sends `bos` to (q_0, accept(q_0)) and each
pair (q, a) to (δ(q, a), accept(δ(q, a))): the transition table and the accepting set live
in V alone. Every output block is c_t times a one-hot, hence the decode margin is c_t ≥ 1.

A big automaton (dense V and Q above `SPARSE_LOWERING_BYTES`) gets the same weights as
sparse COO tensors — 2 nonzeros per column of V, Q = I — never built dense; the margin
argument is the same, checked on the entries (`check_onehot_columns`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from lat.compiler.ir import CheckedAutomaton
from lat.compiler.lower import Estimate, Lowered
from lat.runtime.forms.sparse import coo
from lat.runtime.interface import Interface, OutputField, TokenField

VERDICTS = ("reject", "accept")
#: dense V and Q above this many bytes are built sparse
SPARSE_LOWERING_BYTES = 64 << 20


def uses_sparse_weights(states: int, symbols: int) -> bool:
    """Whether `lower_automaton` builds sparse weights (the size estimate uses the same
    rule): dense V and Q above `SPARSE_LOWERING_BYTES`."""
    d, d_out = 1 + states * symbols, states + 2
    return 4 * (d_out * d + d * d) > SPARSE_LOWERING_BYTES


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


#: bytes per token coordinate of a sparse lowering's working set (COO entries of V and Q,
#: their copies in a save, the interface's tables)
SPARSE_BYTES_PER_COORDINATE = 512


def lowering_estimate(states: int, symbols: int, placement: str = "weights") -> Estimate:
    """What lowering an automaton of these sizes allocates: dense V and Q, or for a big
    one (weights placement, `uses_sparse_weights`) a few hundred bytes per coordinate.
    `weight_bytes` is always the dense fp32 size."""
    d_out = states + 2
    d = 1 + states * symbols + (d_out if placement == "context" else 0)
    dense = Estimate.of(heads=1, d=d, d_out=d_out, working=0, steps=None)
    if placement == "weights" and uses_sparse_weights(states, symbols):
        return Estimate(1, d, d_out, dense.weight_bytes, SPARSE_BYTES_PER_COORDINATE * d, None)
    return dense


def lower_automaton(a: CheckedAutomaton, sparse: bool | None = None) -> Lowered:
    """One head, Q = I (see the module docstring). `sparse`: build sparse COO weights;
    None decides by size (`uses_sparse_weights`)."""
    if sparse is None:
        sparse = uses_sparse_weights(len(a.states), len(a.alphabet))
    if sparse:
        return _lower_sparse(a)
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


def _lower_sparse(a: CheckedAutomaton) -> Lowered:
    """`lower_automaton`'s weights as sparse COO tensors, built from index arrays."""
    interface = automaton_interface(a)
    d, d_out = interface.d, interface.d_out
    state_index = {q: i for i, q in enumerate(a.states)}
    accepting = set(a.accept)
    pair_offset = interface.token_offset("state_symbol")
    symbols = {s: i for i, s in enumerate(a.alphabet)}
    columns = [interface.token_offset("bos")]
    targets = [a.start]
    for (state, symbol), target in a.transition_table.items():
        # product field (q, a) sits at offset + index(q)·|Σ| + index(a)
        columns.append(pair_offset + state_index[state] * len(symbols) + symbols[symbol])
        targets.append(target)
    column = np.array(columns, dtype=np.int64)
    state_row = np.array([state_index[t] for t in targets], dtype=np.int64)
    verdict_row = len(a.states) + np.array([t in accepting for t in targets], dtype=np.int64)
    check_onehot_columns(column, d)
    rows = np.concatenate([state_row, verdict_row])
    cols = np.concatenate([column, column])
    V = coo(torch.from_numpy(np.stack([np.zeros_like(rows), rows, cols])),
            torch.ones(len(rows), dtype=torch.float32), (1, d_out, d))
    diagonal = torch.arange(d)
    Q = coo(torch.stack([torch.zeros(d, dtype=torch.long), diagonal, diagonal]),
            torch.ones(d, dtype=torch.float32), (1, d, d), coalesced=True)
    return Lowered(V=V, Q=Q, interface=interface, decode_margin=1.0,
                   margin_note="one-hot tokens and Q = I: every output block is c·e_target "
                               "with c ≥ 1 (sparse weights)")


def check_onehot_columns(columns: np.ndarray, d: int) -> None:
    """Each token coordinate is written once (one target per (state, symbol) and bos):
    then each output block of V's column is one 1, which the margin argument needs."""
    if columns.size and (int(columns.min()) < 0 or int(columns.max()) >= d
                         or len(np.unique(columns)) != len(columns)):
        raise ValueError("a token coordinate of the automaton is written twice or is out "
                         "of range")


# -- context placement: one set of weights for every automaton of given sizes ----------------


def slot_names(prefix: str, count: int) -> tuple[str, ...]:
    """Placeholder names of the universal executor's slots, replaced when a program binds."""
    return tuple(f"<{prefix}{i}>" for i in range(count))


def lower_automaton_context(states: int, symbols: int) -> Lowered:
    """The universal automaton executor for ≤ `states` states and ≤ `symbols` symbols.

    Tokens have a key part — `bos` or the pair (state, symbol) — and a value part — the
    next state and its verdict. The prompt is the program's table, one token per entry
    (bos ↦ (q_0, accept(q_0)), (q, a) ↦ (δ(q,a), accept(δ(q,a)))), then the `bos` query.
    One head, the paper's associative-memory construction: Q = [[I,0],[0,0]] matches keys,
    V = [[0,0],[0,I]] reads values. A query (q, a) — fed back from the decoded state and
    the next input symbol — matches exactly one table entry; queries carry a zero value, so
    the output is exactly that entry's value: decode margin 1.
    """
    interface = Interface(
        kind="automaton",
        program="<universal>",
        input_alphabet=slot_names("a", symbols),
        token_fields=(
            TokenField("bos", "const"),
            TokenField("key", "product", slot_names("q", states), slot_names("a", symbols)),
            TokenField("value_state", "onehot", slot_names("q", states)),
            TokenField("value_verdict", "onehot", VERDICTS),
        ),
        output_fields=(OutputField("state", slot_names("q", states)),
                       OutputField("accept", VERDICTS)),
        prompt=({"bos": ()},),
        feed={"key": ("output:state", "input")},
        result_field="accept",
        trace_field="state",
        extra={"placement": "context", "states": states, "symbols": symbols},
    )
    d, d_out = interface.d, interface.d_out
    key_width = 1 + states * symbols
    Q = np.zeros((1, d, d), dtype=np.float32)
    Q[0, :key_width, :key_width] = np.eye(key_width)
    V = np.zeros((1, d_out, d), dtype=np.float32)
    V[0, :, key_width:] = np.eye(d_out)
    return Lowered(V=V, Q=Q, interface=interface, decode_margin=1.0,
                   margin_note="one-hot keys: a query matches exactly one table entry")


def bind_automaton(interface: Interface, a: CheckedAutomaton) -> Interface:
    """The universal executor's interface with program `a` on its slots and in its prompt."""
    capacity_states = len(interface.token_field("value_state").values)
    capacity_symbols = len(interface.token_field("key").values2)  # not the bound alphabet
    if len(a.states) > capacity_states or len(a.alphabet) > capacity_symbols:
        raise ValueError(
            f"automaton '{a.name}' has {len(a.states)} states and {len(a.alphabet)} symbols; "
            f"this executor runs at most {capacity_states} and {capacity_symbols}"
        )
    states = (*a.states, *slot_names("q", capacity_states)[len(a.states):])
    symbols = (*a.alphabet, *slot_names("a", capacity_symbols)[len(a.alphabet):])

    def entry(target: str) -> dict[str, tuple[str, ...]]:
        return {"value_state": (f"const:{target}",),
                "value_verdict": (f"const:{VERDICTS[target in a.accept]}",)}

    table = [{"bos": (), **entry(a.start)}]
    table += [{"key": (f"const:{q}", f"const:{s}"), **entry(target)}
              for (q, s), target in a.transition_table.items()]
    return dataclasses.replace(
        interface,
        program=a.name,
        input_alphabet=tuple(a.alphabet),
        token_fields=(
            TokenField("bos", "const"),
            TokenField("key", "product", states, symbols),
            TokenField("value_state", "onehot", states),
            TokenField("value_verdict", "onehot", VERDICTS),
        ),
        output_fields=(OutputField("state", states), OutputField("accept", VERDICTS)),
        prompt=(*table, {"bos": ()}),
    )
