"""The abstract syntax of `.lat` programs: frozen dataclasses with source positions.

Every node carries the `Pos` of its first character so that the checker can report
`FILE:LINE:COL` for any mistake. Symbols are compared by their text: `0`, `"0"` and the
name-like `zero` are symbols whose value is the text between the quotes, if any.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Pos:
    """A 1-based line and column in a source file."""

    line: int
    col: int


NOWHERE = Pos(0, 0)


@dataclass(frozen=True)
class Name:
    """An identifier (state names, declaration names)."""

    text: str
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Symbol:
    """An alphabet symbol, memory key/value or tape symbol.

    `quoted` records how it was written so the printer can round-trip it; it does not
    take part in equality: `"a"` and `a` are the same symbol.
    """

    text: str
    quoted: bool = field(default=False, compare=False)
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Star:
    """`*` in a transition: every symbol without an explicit rule from that state."""

    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class HeaderItem:
    """One header item as written (`alphabet:`, `start:` ...): its keyword and position.

    Declarations keep these, in source order and repeats included, so the checker can report
    a repeated item with both positions and a missing one at the declaration. The parser keeps
    the first occurrence's value in the declaration's fields; a missing item leaves an empty
    placeholder there (`()`, `Name("")`, `Symbol("")`, `Bound(0, 0)`).
    """

    keyword: str
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Transition:
    """`STATE SYMBOL[|SYMBOL...] -> STATE` (automaton)."""

    state: Name
    symbols: tuple[Symbol, ...] | Star
    target: Name
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Automaton:
    name: Name
    alphabet: tuple[Symbol, ...]
    states: tuple[Name, ...]
    start: Name
    accept: tuple[Name, ...]
    transitions: tuple[Transition, ...]
    pos: Pos = field(default=NOWHERE, compare=False)
    header: tuple[HeaderItem, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Entry:
    """`KEY -> VALUE` (memory)."""

    key: Symbol
    value: Symbol
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Memory:
    name: Name
    entries: tuple[Entry, ...]
    default: Symbol | None
    pos: Pos = field(default=NOWHERE, compare=False)
    header: tuple[HeaderItem, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Rule:
    """`STATE READ[|READ...] -> WRITE MOVE NEXT` (machine); MOVE is one of L, R, S."""

    state: Name
    reads: tuple[Symbol, ...] | Star
    write: Symbol
    move: str
    target: Name
    pos: Pos = field(default=NOWHERE, compare=False)
    move_pos: Pos = field(default=NOWHERE, compare=False)  # where MOVE is written


@dataclass(frozen=True)
class Bound:
    """`bound: steps N, tape M`."""

    steps: int
    tape: int
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Machine:
    name: Name
    tape: tuple[Symbol, ...]
    blank: Symbol
    states: tuple[Name, ...]
    start: Name
    halt: tuple[Name, ...]
    bound: Bound
    rules: tuple[Rule, ...]
    pos: Pos = field(default=NOWHERE, compare=False)
    header: tuple[HeaderItem, ...] = field(default=(), compare=False)


Declaration = Automaton | Memory | Machine


@dataclass(frozen=True)
class Program:
    """A parsed `.lat` file: its declarations in source order."""

    declarations: tuple[Declaration, ...]
    filename: str = field(default="<string>", compare=False)
