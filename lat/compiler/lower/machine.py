"""Lower a bounded Turing machine to MHLA weights (weights placement): one token per step.

The tape is read by linear attention through a sum of deltas (docs/ARCHITECTURE.md, "The model").
Token fields:
- `cell` one-hot over the N cells: the cell a token writes to (the key of tape reads);
- `cell_symbol` the product cell ⊗ tape symbol, signed: the prompt's token for cell c holds
  e_c⊗e_x (x the input symbol or the blank); a step's token holds e_p⊗(e_new − e_old) for the
  cell p it wrote, so the tokens of cell p sum to e_p⊗e_tape[p];
- `state_head` the product state ⊗ head cell: the configuration being executed;
- `bos` the last prompt token, which executes the start state at cell 0.

Heads: one per state q (and one for `bos`, a copy of the start state's). Head q attends
with score [state = q]·[cell_s = head] (Q_q maps state_head (q, c) onto key cell c), so it
sees exactly the tokens of the head cell; V_q maps their summed cell_symbol e_p⊗e_a to the
whole transition: next state, written symbol, read symbol a, the cell p, the new head cell
(or `out` past the last cell) and `halt` = no. A halting state's head writes halt = yes and
leaves everything as it is. Every output block is exactly one one-hot: decode margin 1.

The feedback re-embeds decoded values only: (cell, cell ⊗ (write − read), next state ⊗ head).
The run stops when `halt` = yes, when the head decodes `out` (that transition is not taken:
`out_of_tape`), or after `steps` transitions (`step_limit`). `interface.extra` carries the
machine's `MachineRecord` (kinds/machine.py), from which its runs are read back.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from lat.compiler.ir import CheckedMachine
from lat.compiler.kinds.machine import OUT, MachineRecord
from lat.compiler.lower import Lowered
from lat.runtime.interface import Interface, OutputField, TokenField

NO_YES = ("no", "yes")


def cell_names(cells: int) -> tuple[str, ...]:
    return tuple(str(c) for c in range(cells))


def next_head(cell: int, move: str, cells: int) -> str:
    """The head cell after a move: L on cell 0 stays; R off the last cell is `out`."""
    if move == "L":
        return str(max(cell - 1, 0))
    if move == "R":
        return OUT if cell + 1 == cells else str(cell + 1)
    return str(cell)


def record(m: CheckedMachine, tokens_per_step: int = 1) -> MachineRecord:
    """What the readout needs of `m` (kinds/machine.py), written into `interface.extra`."""
    return MachineRecord(blank=m.blank, start=m.start, tape=tuple(m.tape), steps=m.max_steps,
                         tokens_per_step=tokens_per_step)


def machine_interface(m: CheckedMachine) -> Interface:
    cells = cell_names(m.tape_cells)
    tape_prompt = tuple(
        {"cell": (f"const:{c}",), "cell_symbol": (f"const:{c}", f"input:{c}")} for c in cells
    )
    return Interface(
        kind="machine",
        program=m.name,
        input_alphabet=tuple(s for s in m.tape if s != m.blank),
        token_fields=(
            TokenField("bos", "const"),
            TokenField("cell", "onehot", cells),
            TokenField("cell_symbol", "product", cells, tuple(m.tape)),
            TokenField("state_head", "product", tuple(m.states), cells),
        ),
        output_fields=(
            OutputField("state", tuple(m.states)),
            OutputField("write", tuple(m.tape)),
            OutputField("read", tuple(m.tape)),
            OutputField("cell", cells),
            OutputField("head", (*cells, OUT)),
            OutputField("halt", NO_YES),
        ),
        prompt=(*tape_prompt, {"bos": ()}),
        feed={
            "cell": ("output:cell",),
            "cell_symbol": ("output:cell", "output:write", "output:read"),
            "state_head": ("output:state", "output:head"),
        },
        result_field="state",
        trace_field="state",
        halt_on=(("halt", "yes"), ("head", OUT)),
        max_steps=m.max_steps,
        input_fill=m.blank,
        max_input_length=m.tape_cells,
        extra=record(m).to_extra(),
    )


def lower_machine(m: CheckedMachine) -> Lowered:
    interface = machine_interface(m)
    d, d_out = interface.d, interface.d_out
    heads = len(m.states) + 1  # one per state, then the bos head
    V = np.zeros((heads, d_out, d), dtype=np.float32)
    Q = np.zeros((heads, d, d), dtype=np.float32)
    out_offset = {f.name: offset for f, offset in interface.output_slices()}
    outputs = {f.name: f for f in interface.output_fields}
    cell_key = interface.token_offset("cell")
    cell_symbol = interface.token_field("cell_symbol")
    cell_symbol_offset = interface.token_offset("cell_symbol")
    state_head = interface.token_field("state_head")
    state_head_offset = interface.token_offset("state_head")
    bos = interface.token_offset("bos")

    def emit(h: int, column: int, **values: str) -> None:
        for name, value in values.items():
            V[h, out_offset[name] + outputs[name].values.index(value), column] = 1.0

    def write_transitions(head: int, state: str) -> None:
        for cell in range(m.tape_cells):
            for symbol in m.tape:
                column = cell_symbol_offset + cell_symbol.index((str(cell), symbol))
                if state in m.halt:
                    emit(head, column, state=state, write=symbol, read=symbol,
                         cell=str(cell), head=str(cell), halt="yes")
                    continue
                write, move, target = m.rule_table[(state, symbol)]
                emit(head, column, state=target, write=write, read=symbol, cell=str(cell),
                     head=next_head(cell, move, m.tape_cells), halt="no")

    for head, state in enumerate(m.states):
        for cell in range(m.tape_cells):
            Q[head, cell_key + cell, state_head_offset + state_head.index((state, str(cell)))] = 1
        write_transitions(head, state)
    Q[-1, cell_key + 0, bos] = 1.0  # bos executes the start state on cell 0
    write_transitions(heads - 1, m.start)
    return Lowered(
        V=V,
        Q=Q,
        interface=interface,
        decode_margin=1.0,
        margin_note="the tokens of the head cell sum to e_cell⊗e_symbol (sum of deltas); "
        "one head matches: every output block is exactly one-hot",
    )


# -- context placement: the bounded universal machine ---------------------------------------

MOVES = ("L", "S", "R")
NONE = "·"  # the value a field takes in the phase that does not compute it


def _slots(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"<{prefix}{i}>" for i in range(count))


def _context_interface(states: tuple[str, ...], tape: tuple[str, ...], cells: int,
                       program: str) -> Interface:
    names = cell_names(cells)
    return Interface(
        kind="machine",
        program=program,
        input_alphabet=tape,
        token_fields=(
            TokenField("cell", "onehot", names),
            TokenField("cell_symbol", "product", names, tape),
            TokenField("from_move", "product", names, MOVES),
            TokenField("state_a", "onehot", states),
            TokenField("key", "product", states, tape),
            TokenField("cell_b", "onehot", names),
            TokenField("value_write", "onehot", tape),
            TokenField("value_move", "onehot", MOVES),
            TokenField("value_state", "onehot", states),
            TokenField("value_halt", "onehot", NO_YES),
        ),
        output_fields=(
            OutputField("state", states),
            OutputField("read", tape),
            OutputField("head", (*names, OUT)),
            OutputField("write", (*tape, NONE)),
            OutputField("move", (*MOVES, NONE)),
            OutputField("halt", NO_YES),
        ),
        prompt=({"from_move": ("const:0", "const:S"), "state_a": (f"const:{states[0]}",)},),
        feed=(
            # B: look up (state, read) in the table; carry the head cell along.
            {"key": ("output:state", "output:read"), "cell_b": ("output:head",)},
            # A: write at the head cell, move, read the new cell, carry the next state.
            {"cell": ("output:head",), "cell_symbol": ("output:head", "output:write",
                                                        "output:read"),
             "from_move": ("output:head", "output:move"), "state_a": ("output:state",)},
        ),
        result_field="state",
        trace_field="state",
        halt_on=(("halt", "yes"), ("head", OUT)),
        extra={"placement": "context", "states": len(states), "symbols": len(tape),
               "cells": cells, "tokens_per_step": 2},
    )


def lower_machine_context(states: int, symbols: int, cells: int) -> Lowered:
    """Universal weights for every machine of ≤ `states` states, ≤ `symbols` tape symbols
    and exactly `cells` tape cells; the program's table is the prompt. Two tokens a step.

    Phase A (apply) carries the last write e_p⊗(e_w − e_r) at cell p, the pair (p, move) and
    the next state; it reads the new cell through Q (which maps (p, move) onto the key of the
    cell p+move), decodes the new head cell from (p, move) and echoes the state. Phase B
    (look up) carries the key (state, read symbol) and the head cell; one head matches the
    key against the table entries of the prompt and reads their values (write, move, next
    state, halt). Five heads; every output block is a positive multiple of one one-hot.
    """
    interface = _context_interface(_slots("q", states), _slots("g", symbols), cells,
                                   "<universal>")
    d, d_out = interface.d, interface.d_out
    offset = {f.name: interface.token_offset(f.name) for f in interface.token_fields}
    field = {f.name: f for f in interface.token_fields}
    out_offset = {f.name: o for f, o in interface.output_slices()}
    outputs = {f.name: f for f in interface.output_fields}
    heads = {"read": 0, "head": 1, "state": 2, "lookup": 3, "cell_b": 4}
    V = np.zeros((len(heads), d_out, d), dtype=np.float32)
    Q = np.zeros((len(heads), d, d), dtype=np.float32)

    def out(head: str, column: int, name: str, value: str) -> None:
        V[heads[head], out_offset[name] + outputs[name].values.index(value), column] = 1.0

    def self_count(head: str, block: str) -> None:
        """Score = number of earlier tokens with the same value of `block` (≥ 1)."""
        width = field[block].width
        Q[heads[head], offset[block]:offset[block] + width,
          offset[block]:offset[block] + width] = np.eye(width)

    tape = field["cell_symbol"].values2
    for p in range(cells):
        for move in MOVES:
            column = offset["from_move"] + field["from_move"].index((str(p), move))
            target = next_head(p, move, cells)
            read_cell = p if target == OUT else int(target)  # past the end: any cell will do
            Q[heads["read"], offset["cell"] + read_cell, column] = 1.0
            out("head", column, "head", target)
            out("head", column, "write", NONE)
            out("head", column, "move", NONE)
            out("head", column, "halt", "no")
        for symbol in tape:
            out("read", offset["cell_symbol"] + field["cell_symbol"].index((str(p), symbol)),
                "read", symbol)
        out("cell_b", offset["cell_b"] + p, "head", str(p))
    self_count("head", "from_move")
    self_count("state", "state_a")
    for state in field["state_a"].values:
        out("state", offset["state_a"] + field["state_a"].index(state), "state", state)
    self_count("lookup", "key")
    for state, symbol in itertools.product(field["state_a"].values, tape):
        out("lookup", offset["key"] + field["key"].index((state, symbol)), "read", symbol)
    for name, target in (("value_write", "write"), ("value_move", "move"),
                         ("value_state", "state"), ("value_halt", "halt")):
        for value in field[name].values:
            out("lookup", offset[name] + field[name].index(value), target, value)
    self_count("cell_b", "cell_b")
    return Lowered(V=V, Q=Q, interface=interface, decode_margin=1.0,
                   margin_note="every output block is a positive count times one one-hot")


def bind_machine(interface: Interface, m: CheckedMachine) -> Interface:
    """The universal machine's interface with `m`'s table, tape and start in its prompt."""
    extra = interface.extra
    if len(m.states) > extra["states"] or len(m.tape) > extra["symbols"]:
        raise ValueError(
            f"machine '{m.name}' has {len(m.states)} states and {len(m.tape)} tape symbols; "
            f"this executor runs at most {extra['states']} and {extra['symbols']}"
        )
    if m.tape_cells != extra["cells"]:
        raise ValueError(f"machine '{m.name}' has {m.tape_cells} tape cells; this executor "
                         f"was compiled for exactly {extra['cells']}")
    states = (*m.states, *_slots("q", extra["states"])[len(m.states):])
    tape = (*m.tape, *_slots("g", extra["symbols"])[len(m.tape):])
    bound = _context_interface(states, tape, m.tape_cells, m.name)
    cells = cell_names(m.tape_cells)
    tape_tokens = tuple({"cell": (f"const:{c}",), "cell_symbol": (f"const:{c}", f"input:{c}")}
                        for c in cells)
    table = []
    for state, symbol in itertools.product(m.states, m.tape):
        if state in m.halt:
            write, move, target, halt = symbol, "S", state, "yes"
        else:
            write, move, target = m.rule_table[(state, symbol)]
            halt = "no"
        table.append({"key": (f"const:{state}", f"const:{symbol}"),
                      "value_write": (f"const:{write}",), "value_move": (f"const:{move}",),
                      "value_state": (f"const:{target}",), "value_halt": (f"const:{halt}",)})
    start = {"from_move": ("const:0", "const:S"), "state_a": (f"const:{m.start}",)}
    return dataclasses.replace(
        bound,
        input_alphabet=tuple(s for s in m.tape if s != m.blank),
        prompt=(*tape_tokens, *table, start),
        max_steps=2 * m.max_steps + 1,  # B and A per transition, then B on the final state
        input_fill=m.blank,
        max_input_length=m.tape_cells,
        extra={**extra, **record(m, tokens_per_step=2).to_extra()},
    )
