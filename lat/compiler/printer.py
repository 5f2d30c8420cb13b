"""Canonical `.lat` text for an AST: the inverse of the parser.

`parse_program(format_program(p)) == p` for every program the parser can produce (positions
and the way a symbol was quoted do not take part in AST equality). The layout is fixed —
header items first in a fixed order, then body lines in source order, two-space indent —
so the printer doubles as a formatter and lets a transformed automaton (e.g. a minimised
one, via `graph.to_ast`) be written back as a program a person can read. Each kind writes
its own lines (`Kind.format`, under `kinds/`) with the helpers here.
"""

from __future__ import annotations

import re

from lat.compiler import ast
from lat.compiler.parse import RESERVED_WORDS

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[0-9]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}
INDENT = "  "


def is_plain_name(text: str) -> bool:
    """Whether `text` can be written as a bare NAME (not a reserved word)."""
    return bool(_NAME.fullmatch(text)) and text not in RESERVED_WORDS


def format_symbol(symbol: ast.Symbol | str) -> str:
    """A symbol as source text: bare when it is a name or a number, quoted otherwise."""
    text = symbol.text if isinstance(symbol, ast.Symbol) else symbol
    if is_plain_name(text) or _INT.fullmatch(text):
        return text
    return '"' + "".join(_ESCAPES.get(char, char) for char in text) + '"'


def symbols_text(symbols: tuple[ast.Symbol, ...]) -> str:
    """A header list of symbols: `a, "b c", 0`."""
    return ", ".join(format_symbol(symbol) for symbol in symbols)


def names_text(names: tuple[ast.Name, ...]) -> str:
    """A header list of names: `q0, q1`."""
    return ", ".join(name.text for name in names)


def header_lines(*items: tuple[str, str]) -> list[str]:
    """Header lines; an empty list or name is left out, which parses back to the same AST
    (a missing item and an empty one both read as `()` / `Name("")`) and never lets a
    following body line be read as part of the empty list."""
    return [f"{INDENT}{keyword}: {value}" for keyword, value in items if value]


def selection_text(symbols: tuple[ast.Symbol, ...] | ast.Star) -> str:
    """The symbols a rule reads: `a | b`, or `*`."""
    if isinstance(symbols, ast.Star):
        return "*"
    return " | ".join(format_symbol(symbol) for symbol in symbols)


def format_declaration(declaration: ast.Declaration) -> str:
    """One declaration as canonical text (no trailing newline): its kind writes the lines."""
    from lat.compiler.kinds import kind_of  # the kinds build on this module's helpers

    return "\n".join([*kind_of(declaration).format(declaration), "}"])


def format_program(program: ast.Program) -> str:
    """A whole program as canonical text: declarations separated by a blank line."""
    text = "\n\n".join(format_declaration(d) for d in program.declarations)
    return text + "\n" if text else ""
