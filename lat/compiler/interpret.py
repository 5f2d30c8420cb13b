"""Reference interpreters: the meaning of a checked program, in plain Python.

These are the semantics of the README's DSL section written as directly as possible — no numpy,
no torch — so that every compiled or learned model can be tested against them. An input
outside a program's domain raises `InputError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lat.compiler.ir import Checked, CheckedAutomaton, CheckedMachine, CheckedMemory
from lat.runtime.errors import InputError


@dataclass(frozen=True)
class AutomatonRun:
    """The states visited (q_0 .. q_n for a word of n symbols) and the verdict."""

    trace: tuple[str, ...]
    final_state: str
    output: Literal["accept", "reject"]
    steps: int


@dataclass(frozen=True)
class MemoryRun:
    """The value looked up; a lookup is one step."""

    output: str
    steps: int = 1


@dataclass(frozen=True)
class MachineRun:
    """How the machine stopped, and the whole tape (`tape_cells` cells) at that point."""

    output: str
    status: Literal["halted", "step_limit", "out_of_tape"]
    final_state: str
    steps: int
    tape: tuple[str, ...]
    head: int


Run = AutomatonRun | MemoryRun | MachineRun


def run_automaton(a: CheckedAutomaton, word: Sequence[str]) -> AutomatonRun:
    """Read `word` from the start state; accept when the last state is accepting."""
    alphabet = set(a.alphabet)
    for index, symbol in enumerate(word):
        if symbol not in alphabet:
            raise InputError(
                f"symbol {symbol!r} (position {index}) is not in the alphabet of "
                f"automaton '{a.name}': {', '.join(a.alphabet)}"
            )
    state = a.start
    trace = [state]
    for symbol in word:
        state = a.transition_table[state, symbol]
        trace.append(state)
    return AutomatonRun(
        trace=tuple(trace),
        final_state=state,
        output="accept" if state in a.accept else "reject",
        steps=len(word),
    )


def run_memory(m: CheckedMemory, key: str) -> MemoryRun:
    """The value stored under `key`, or the default; an absent key without one is an error."""
    if key in m.table:
        return MemoryRun(m.table[key])
    if m.default is not None:
        return MemoryRun(m.default)
    raise InputError(f"key {key!r} is not in memory '{m.name}' and it has no default")


def machine_output(tape: Sequence[str], blank: str, one_char: bool) -> str:
    """Cells 0 .. last non-blank, joined with "" (one-character symbols) or single spaces."""
    last = max((cell for cell, symbol in enumerate(tape) if symbol != blank), default=-1)
    return ("" if one_char else " ").join(tape[: last + 1])


def run_machine(m: CheckedMachine, word: Sequence[str]) -> MachineRun:
    """Run a bounded Turing machine on `word` (written from cell 0, head on cell 0).

    Stops when the state is halting (`halted`), after `max_steps` transitions
    (`step_limit`), or just before a transition that would move the head to cell
    `tape_cells` (`out_of_tape`; that transition is not taken). Moving L on cell 0 stays.
    """
    if len(word) > m.tape_cells:
        raise InputError(
            f"the input has {len(word)} symbols but machine '{m.name}' has "
            f"{m.tape_cells} tape cells"
        )
    symbols = set(m.tape)
    for index, symbol in enumerate(word):
        if symbol not in symbols:
            raise InputError(
                f"symbol {symbol!r} (position {index}) is not on the tape of machine "
                f"'{m.name}': {', '.join(m.tape)}"
            )
        if symbol == m.blank:
            raise InputError(
                f"the input may not contain the blank symbol {symbol!r} "
                f"(position {index})"
            )
    tape = [m.blank] * m.tape_cells
    tape[: len(word)] = word
    head, state, steps = 0, m.start, 0
    while True:
        if state in m.halt:
            status = "halted"
            break
        if steps >= m.max_steps:
            status = "step_limit"
            break
        write, move, target = m.rule_table[state, tape[head]]
        moved = head + 1 if move == "R" else max(head - 1, 0) if move == "L" else head
        if moved >= m.tape_cells:
            status = "out_of_tape"
            break
        tape[head] = write
        head, state, steps = moved, target, steps + 1
    one_char = all(len(symbol) == 1 for symbol in m.tape)
    return MachineRun(
        output=machine_output(tape, m.blank, one_char),
        status=status,
        final_state=state,
        steps=steps,
        tape=tuple(tape),
        head=head,
    )


def run(declaration: Checked, word: Sequence[str] | str) -> Run:
    """Run any checked declaration with its kind's interpreter. A memory takes one key: a
    string, or a one-symbol word."""
    from lat.compiler.kinds import kind_of  # the kinds build on this module's interpreters

    return kind_of(declaration).interpret(declaration, word)
