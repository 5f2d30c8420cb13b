"""The registry of program kinds: one module per kind, one line each in `KINDS`
(docs/ARCHITECTURE.md, "Adding a kind").

Every question that depends on what kind a program is — how to check, print, interpret,
lower, bind or read back a run of it — is asked here: `kind_of(declaration)` for an AST
node or a checked declaration, `kind_named(name)` for the `interface.kind` label an
artifact carries. Both fail loudly for anything no kind claims (TypeError for an object
that is no declaration, `UnknownKind` for an artifact's unknown label), rather than falling
through to some other kind's code.
"""

from __future__ import annotations

from lat.compiler.kinds import automaton, machine, memory
from lat.compiler.kinds.base import Kind, StepBound, UnknownKind, verify_words

KINDS: tuple[Kind, ...] = (
    automaton.KIND,
    memory.KIND,
    machine.KIND,
)

_BY_NAME = {kind.name: kind for kind in KINDS}
_BY_TYPE = {node: kind for kind in KINDS for node in (kind.syntax, kind.checked)}


def kind_names() -> tuple[str, ...]:
    """The registered kinds' names, in registry order."""
    return tuple(_BY_NAME)


def kind_named(name: str) -> Kind:
    """The kind called `name` (an artifact's `interface.kind`); UnknownKind otherwise."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownKind(f"unknown program kind {name!r}: lat knows "
                          f"{', '.join(kind_names())}") from None


def kind_of(declaration: object) -> Kind:
    """The kind of a declaration: its AST node or its checked form; TypeError (a bug in the
    caller) for anything else."""
    try:
        return _BY_TYPE[type(declaration)]
    except KeyError:
        raise TypeError(f"not a declaration of a known program kind: "
                          f"{type(declaration).__name__} (lat knows "
                          f"{', '.join(kind_names())})") from None


__all__ = ["KINDS", "Kind", "StepBound", "UnknownKind", "kind_named", "kind_names",
           "kind_of", "verify_words"]
