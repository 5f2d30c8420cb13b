"""The checked, normalised form of a program: what the checker proves and everyone else uses.

The AST keeps what the user wrote (`|`, `*`, positions, quoting); these dataclasses keep
what it means, with plain strings: total tables, `|` and `*` expanded. The interpreter,
the graph algorithms and the lowering passes read only this form, so none of them has to
know the surface syntax or re-check it. Tables are read-only mappings (`MappingProxyType`);
a declaration keeps its `source` AST node so later passes can still point at the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lat.compiler import ast
from lat.compiler.errors import Diagnostic, LatError, did_you_mean


def frozen_mapping(items: Mapping | None = None) -> Mapping:
    """A read-only copy of `items` that keeps insertion order."""
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class CheckedAutomaton:
    """A total deterministic finite automaton.

    `transition_table[(state, symbol)]` is defined for every state × alphabet pair.
    `states` and `alphabet` keep declaration order, which the lowering uses for one-hot
    indices and the minimiser for the names it keeps.
    """

    name: str
    alphabet: tuple[str, ...]
    states: tuple[str, ...]
    start: str
    accept: frozenset[str]
    transition_table: Mapping[tuple[str, str], str]
    source: ast.Automaton = field(compare=False, repr=False)

    def __hash__(self) -> int:  # hashable despite the mapping, e.g. for functools caches
        return hash((self.name, self.alphabet, self.states, self.start, self.accept,
                     tuple(self.transition_table.items())))


@dataclass(frozen=True)
class CheckedMemory:
    """A finite key → value table, with an optional value for absent keys.

    `table` keeps source order. `values` lists the distinct values in first-appearance
    order, the default last when it is not already a value: the output vocabulary.
    """

    name: str
    table: Mapping[str, str]
    default: str | None
    source: ast.Memory = field(compare=False, repr=False)

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.table.items()), self.default))

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys, in source order."""
        return tuple(self.table)

    @property
    def values(self) -> tuple[str, ...]:
        """Distinct values in first-appearance order; the default last if it is new."""
        seen = dict.fromkeys(self.table.values())
        if self.default is not None:
            seen.setdefault(self.default)
        return tuple(seen)


@dataclass(frozen=True)
class CheckedMachine:
    """A deterministic Turing machine on a bounded tape.

    `rule_table[(state, read)] = (write, move, next)` with move in "L", "R", "S", defined for
    every non-halting state × tape symbol and for no halting state. `max_steps` and
    `tape_cells` are the `bound:` item.
    """

    name: str
    tape: tuple[str, ...]
    blank: str
    states: tuple[str, ...]
    start: str
    halt: frozenset[str]
    max_steps: int
    tape_cells: int
    rule_table: Mapping[tuple[str, str], tuple[str, str, str]]
    source: ast.Machine = field(compare=False, repr=False)

    def __hash__(self) -> int:
        return hash((self.name, self.tape, self.blank, self.states, self.start, self.halt,
                     self.max_steps, self.tape_cells, tuple(self.rule_table.items())))


#: any checked declaration: the one definition (a new kind adds its form here and registers
#: itself in `lat.compiler.kinds`)
Checked = CheckedAutomaton | CheckedMemory | CheckedMachine


@dataclass(frozen=True)
class CheckedProgram:
    """A whole checked file: its declarations in source order and the checker's warnings."""

    declarations: tuple[Checked, ...]
    warnings: tuple[Diagnostic, ...]
    filename: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(declaration.name for declaration in self.declarations)

    def get(self, name: str | None = None) -> Checked:
        """The declaration called `name`, or the only one when `name` is None.

        Raises `LatError` for an unknown name (with a did-you-mean) and for a file that
        holds several declarations when no name was given, so a command line can ask
        for `--name`.
        """
        names = self.names
        listed = ", ".join(names)
        if name is None:
            if len(self.declarations) == 1:
                return self.declarations[0]
            if not self.declarations:
                raise LatError(Diagnostic(self.filename, ast.Pos(1, 1),
                                          "the file declares nothing",
                                          "write an automaton, memory or machine"))
            raise LatError(Diagnostic(
                self.filename, self.declarations[1].source.pos,
                f"the file declares {len(names)} programs; say which one",
                f"pass --name, one of: {listed}",
            ))
        for declaration in self.declarations:
            if declaration.name == name:
                return declaration
        close = did_you_mean(name, names)
        hint = f"pass --name, one of: {listed}"
        if close:
            hint = f"{close} ({hint})"
        if not names:
            hint = "the file declares nothing"
        raise LatError(Diagnostic(self.filename, ast.Pos(1, 1),
                                  f"no program named '{name}' in this file", hint))
