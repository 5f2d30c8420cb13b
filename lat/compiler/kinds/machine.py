"""The machine kind: a deterministic Turing machine on a bounded tape, from its checks to its
run report (docs/ARCHITECTURE.md, "Adding a kind").

The lowering itself is lower/machine.py (one token a step in the weights placement, two in
the context placement) and the reference interpreter `interpret.run_machine`. What the
lowering records for the readout is typed here, `MachineRecord`: lower/machine.py writes it
into `interface.extra` and `readout` reads it back to replay a run's writes onto the tape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lat.compiler import ast
from lat.compiler.check import (
    Report,
    Rows,
    check_header,
    check_not_empty,
    check_state,
    check_symbol,
    check_symbols_written,
    check_typable,
    show,
    unique,
    warn_unreachable,
)
from lat.compiler.interpret import MachineRun, machine_output, run_machine
from lat.compiler.ir import CheckedMachine, frozen_mapping
from lat.compiler.kinds.base import Kind, StepBound, report_fields, verify_words
from lat.compiler.lower import Estimate
from lat.compiler.printer import (
    INDENT,
    format_symbol,
    header_lines,
    names_text,
    selection_text,
    symbols_text,
)

if TYPE_CHECKING:
    import networkx as nx

    from lat.compiler.lower import Lowered
    from lat.compiler.lower.memory import Embedding
    from lat.runtime.execute import RunResult
    from lat.runtime.interface import Interface

MOVES = ("L", "R", "S")
REQUIRED = {"tape": "tape: SYMBOL, ...", "blank": "blank: SYMBOL",
            "states": "states: STATE, ...", "start": "start: STATE",
            "halt": "halt: STATE, ...", "bound": "bound: steps N, tape M"}
REPORT_KEYS = ("output", "status", "final_state", "steps")
OUT = "out"  # the head value past the last cell (lower/machine.py)


@dataclass(frozen=True)
class MachineRecord:
    """What a machine's lowering records about its program, for reading a run back.

    Stored in `interface.extra` under the keys `blank`, `start`, `tape` and `steps` (the
    artifact format, unchanged); `tokens_per_step` is the executor's own (1 in the weights
    placement, 2 in the context placement, which writes it with its sizes).
    """

    blank: str
    start: str
    tape: tuple[str, ...]
    steps: int  # the bound's step limit
    tokens_per_step: int = 1

    def to_extra(self) -> dict[str, object]:
        """The program's part of `interface.extra` (the executor's part is not repeated)."""
        return {"blank": self.blank, "start": self.start, "tape": list(self.tape),
                "steps": self.steps}

    @classmethod
    def read(cls, interface: Interface) -> MachineRecord | None:
        """The record of a machine's interface; None for an executor bound to no machine."""
        extra = interface.extra
        if "steps" not in extra:
            return None
        return cls(blank=str(extra["blank"]), start=str(extra["start"]),
                   tape=tuple(str(symbol) for symbol in extra["tape"]),
                   steps=int(extra["steps"]),
                   tokens_per_step=int(extra.get("tokens_per_step", 1)))


def check_machine(m: ast.Machine, report: Report) -> CheckedMachine | None:
    """The checked machine, or None after reporting what is wrong with `m`."""
    errors_before = len(report.errors)
    header = check_header(m, "machine", REQUIRED, report, {
        "tape": m.tape, "blank": m.blank.pos != ast.NOWHERE or m.blank.text,
        "states": m.states, "start": m.start.text, "halt": m.halt,
        "bound": m.bound != ast.Bound(0, 0)})
    check_not_empty(header, "tape", m.tape, "symbols", report)
    check_not_empty(header, "states", m.states, "states", report)
    check_not_empty(header, "halt", m.halt, "states", report,
                    "a machine needs at least one halting state to stop in")
    check_symbols_written([*m.tape, m.blank if "blank" in header else None], report)
    check_typable(m.tape, m.blank.text if "blank" in header else None, report)
    tape = unique(m.tape, "symbol", "tape", report)
    states = unique(m.states, "state", "states", report)
    if "blank" in header and "tape" in header and m.blank.text not in tape:
        report.error(m.blank.pos, f"the blank symbol {show(m.blank.text)} is not in 'tape:'",
                     "add it to the tape alphabet")
    if "start" in header:
        check_state(m.start, states, report)
    for name in m.halt:
        check_state(name, states, report)
    unique(m.halt, "state", "halt", report)
    if "bound" in header:
        for what, value in (("steps", m.bound.steps), ("tape", m.bound.tape)):
            if value < 1:
                report.error(m.bound.pos, f"'bound:' {what} must be at least 1, not {value}",
                             "write e.g. 'bound: steps 100, tape 16'")
    halting = {name.text for name in m.halt}

    rows = Rows()
    for r in m.rules:
        known = check_state(r.state, states, report)
        if known and r.state.text in halting:
            report.error(r.state.pos, f"a rule from the halting state '{r.state.text}'",
                         "a machine stops in a halting state, so this rule never runs: "
                         "remove it, or take the state out of 'halt:'")
            known = False
        check_symbol(r.write, tape, "tape", report)
        if r.move not in MOVES:
            report.error(r.move_pos, f"unknown move '{r.move}'",
                         "MOVE is L (left), R (right) or S (stay)")
        check_state(r.target, states, report)
        if known:
            rows.add(r.state.text, r.reads, (r.write.text, r.move, r.target.text), r.pos,
                     tape, "tape", report)
    if len(report.errors) > errors_before:
        return None

    running = [state for state in states if state not in halting]
    table = rows.complete(m, "machine", running, list(tape), "WRITE MOVE NEXT", report)
    if table is None:
        return None
    checked = CheckedMachine(
        name=m.name.text,
        tape=tuple(tape),
        blank=m.blank.text,
        states=tuple(states),
        start=m.start.text,
        halt=frozenset(halting),
        max_steps=m.bound.steps,
        tape_cells=m.bound.tape,
        rule_table=frozen_mapping(table),
        source=m,
    )
    warn_unreachable(checked, m.states, report)
    return checked


def format_machine(m: ast.Machine) -> list[str]:
    """Canonical lines: header items in a fixed order, then the rules as written."""
    bound = m.bound
    lines = [f"machine {m.name.text} {{"]
    lines += header_lines(("tape", symbols_text(m.tape)),
                          ("blank", format_symbol(m.blank)),
                          ("states", names_text(m.states)),
                          ("start", m.start.text),
                          ("halt", names_text(m.halt)),
                          ("bound", f"steps {bound.steps}, tape {bound.tape}"))
    lines += [f"{INDENT}{r.state.text} {selection_text(r.reads)} -> {format_symbol(r.write)} "
              f"{r.move} {r.target.text}" for r in m.rules]
    return lines


def interpret(m: CheckedMachine, word: Sequence[str] | str) -> MachineRun:
    return run_machine(m, word)


def estimate(m: CheckedMachine, placement: str, dim: int | None = None) -> Estimate:
    """One head per state and one for bos (weights), or the universal machine's five."""
    q, s, c = len(m.states), len(m.tape), m.tape_cells
    if placement == "context":
        heads, d, d_out = 5, 5 * c + c * s + 2 * q + q * s + s + 5, q + 2 * s + c + 8
    else:
        heads, d, d_out = q + 1, 1 + c + c * s + q * c, q + 2 * s + 2 * c + 3
    return Estimate.of(heads=heads, d=d, d_out=d_out, working=0, steps=m.max_steps)


def lower_weights(m: CheckedMachine, embedding: Embedding | None, filename: str) -> Lowered:
    from lat.compiler.lower.machine import lower_machine

    return lower_machine(m)


def lower_context(m: CheckedMachine, embedding: Embedding | None, filename: str) -> Lowered:
    """The bounded universal machine sized for `m`, which binds as the prompt."""
    from lat.compiler.lower.machine import lower_machine_context

    return lower_machine_context(len(m.states), len(m.tape), m.tape_cells)


def bind(interface: Interface, m: CheckedMachine) -> Interface:
    from lat.compiler.lower.machine import bind_machine

    return bind_machine(interface, m)


def readout(interface: Interface, result: RunResult) -> dict[str, object]:
    """Output tape, status, final state and steps of a machine run, read off its decodes.

    The runtime only decodes; this replays what the model wrote (cell, symbol) for every
    transition it took — the same sum of writes the model itself attends to.
    """
    record = MachineRecord.read(interface)
    if record is None:
        raise ValueError(f"'{interface.program}' is an executor bound to no machine: bind "
                         "one (--program) to read its runs")
    answers = [dict(zip(result.decoded, values, strict=True))
               for values in zip(*result.decoded.values(), strict=True)]
    last = answers[-1]
    if record.tokens_per_step == 1:  # answer i decides transition i+1; taken iff fed back
        steps = result.steps
        writes = [(answers[i]["cell"], answers[i]["write"]) for i in range(steps)]
        state = answers[steps - 1]["state"] if steps else record.start
    else:  # a_0, b_1, a_1, b_2, ...: b_k decides, a_k applies (unless its head is out)
        steps = sum(1 for i in range(2, len(answers), 2) if answers[i]["head"] != OUT)
        writes = [(answers[2 * k - 2]["head"], answers[2 * k - 1]["write"])
                  for k in range(1, steps + 1)]
        state = answers[2 * steps]["state"]
    if last["halt"] == "yes":
        status = "halted"
    elif last["head"] == OUT and steps < record.steps:
        status = "out_of_tape"
    else:  # the step bound comes first, even when the next move would leave the tape
        status = "step_limit"
    tape = list(result.input) + [record.blank] * (int(interface.max_input_length or 0)
                                                 - len(result.input))
    for cell, symbol in writes:
        tape[int(cell)] = symbol
    one_char = all(len(symbol) == 1 for symbol in record.tape)
    return {"output": machine_output(tape, record.blank, one_char), "status": status,
            "final_state": state, "steps": steps}


def expected(m: CheckedMachine, word: tuple[str, ...]) -> dict[str, object]:
    return report_fields(run_machine(m, word), REPORT_KEYS)


def verify_inputs(m: CheckedMachine, max_len: int, samples: int,
                  seed: int) -> tuple[list[tuple[str, ...]], str]:
    """Words over the tape alphabet without the blank, no longer than the tape."""
    alphabet = tuple(symbol for symbol in m.tape if symbol != m.blank)
    return verify_words(alphabet, longest_input(m, max_len), samples, seed)


def longest_input(m: CheckedMachine, max_len: int) -> int:
    return min(max_len, m.tape_cells)


def worst_case_steps(interface: Interface, longest_input: int) -> StepBound:
    record = MachineRecord.read(interface)
    if record is None:  # an unbound executor: nothing bounds it but its input
        return StepBound(longest_input, "one per input symbol:")
    return StepBound(record.steps, "its bound: steps")


def cap_steps(interface: Interface, max_steps: int) -> Interface | None:
    """The interface whose runs stop after `max_steps` machine steps (never later than its
    own bound), counted in tokens; None when the interface has no step bound to lower."""
    record = MachineRecord.read(interface)
    if record is None or interface.max_steps is None:
        return None
    tokens = int(interface.max_steps) - record.tokens_per_step * (record.steps - max_steps)
    return dataclasses.replace(interface, max_steps=tokens)


def state_graph(m: CheckedMachine) -> nx.MultiDiGraph:
    """States with `start` and `halt`; one edge per (state, read symbol), keyed by the
    symbol, with the `write` and `move` of its rule."""
    import networkx as nx  # loaded when a graph is first wanted

    graph = nx.MultiDiGraph(name=m.name)
    for state in m.states:
        graph.add_node(state, start=state == m.start, halt=state in m.halt)
    for (state, read), (write, move, target) in m.rule_table.items():
        graph.add_edge(state, target, key=read, symbol=read, write=write, move=move)
    return graph


KIND = Kind(
    name="machine",
    syntax=ast.Machine,
    checked=CheckedMachine,
    check=check_machine,
    format=format_machine,
    interpret=interpret,
    estimate=estimate,
    lower={"weights": lower_weights, "context": lower_context},
    bind=bind,
    readout=readout,
    expected=expected,
    verify_inputs=verify_inputs,
    longest_input=longest_input,
    worst_case_steps=worst_case_steps,
    source_strategy="machine_sources",
    cap_steps=cap_steps,
    size_at=lambda m: m.source.bound.pos,
    state_graph=state_graph,
)
