"""Semantic checks: `ast.Program` → `ir.CheckedProgram`, or the first mistake, located.

Everything the later passes rely on is proved here once — names are known and unique,
tables are deterministic and total, bounds are positive — so the interpreter, the graph
algorithms and the lowering never meet a malformed program. Errors are collected per
declaration and the one earliest in the source is raised, so fixing a file top to bottom
never sees the messages jump around. Totality ("missing rules") is judged only for a
declaration with no other error, since unknown names make the missing set meaningless; it
is reported at the declaration, whose line comes first. Warnings (unreachable states, a `*`
that covers nothing) are returned in source order with the checked program.

This module holds the checks every kind shares (headers, names, symbols, total tables);
each kind's own checker lives in its module under `kinds/` and is found through the
registry (docs/ARCHITECTURE.md, "Adding a kind").
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lat.compiler import ast
from lat.compiler.errors import Diagnostic, LatError, did_you_mean
from lat.compiler.ir import Checked, CheckedProgram
from lat.compiler.printer import format_symbol

_LISTED = 10  # how many missing pairs, names ... a message spells out before "and N more"


def check_program(program: ast.Program) -> CheckedProgram:
    """Check every declaration of `program`.

    Raises `LatError` with the first error in source order; returns the checked, normalised
    declarations and the warnings otherwise.
    """
    from lat.compiler.kinds import kind_of  # the kinds build on this module's helpers

    report = Report(program.filename)
    if not program.declarations:  # what compile, run and verify would refuse, check refuses
        raise LatError(Diagnostic(program.filename, ast.Pos(1, 1), "the file declares nothing",
                                  "write an automaton, memory or machine"))
    first_seen: dict[str, ast.Declaration] = {}
    checked: list[Checked] = []
    for declaration in program.declarations:
        name = declaration.name
        if name.text in first_seen:
            first = first_seen[name.text].name.pos
            report.error(name.pos, f"a program named '{name.text}' is already declared",
                         f"the first is at {at_text(first)}; rename one")
        else:
            first_seen[name.text] = declaration
        result = kind_of(declaration).check(declaration, report)
        if result is not None:
            checked.append(result)
    if report.errors:
        raise LatError(min(report.errors, key=lambda d: d.pos))
    warnings = sorted(report.warnings, key=lambda d: d.pos)
    return CheckedProgram(tuple(checked), tuple(warnings), program.filename)


# --------------------------------------------------------------------------- helpers


@dataclass
class Report:
    filename: str
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def error(self, pos: ast.Pos, message: str, hint: str | None = None) -> None:
        self.errors.append(Diagnostic(self.filename, pos, message, hint))

    def warning(self, pos: ast.Pos, message: str, hint: str | None = None) -> None:
        self.warnings.append(Diagnostic(self.filename, pos, message, hint, severity="warning"))


def at_text(pos: ast.Pos) -> str:
    return f"{pos.line}:{pos.col}"


def show(text: str) -> str:
    """A symbol for a message: 'a', '0', or "a b" when it needs quotes in source."""
    written = format_symbol(text)
    return written if written.startswith('"') else f"'{written}'"


def _listing(texts: Sequence[str], limit: int = _LISTED) -> str:
    shown = ", ".join(texts[:limit])
    return shown + (f" and {len(texts) - limit} more" if len(texts) > limit else "")


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _unknown_hint(word: str, known: Iterable[str], plural: str, keyword: str) -> str:
    known = list(known)
    if not known:
        return f"declare it in '{keyword}:'"
    return did_you_mean(word, known) or f"the {plural} are: {_listing(known)}"


def check_header(declaration: ast.Declaration, kind: str, required: Mapping[str, str],
                 report: Report, present: Mapping[str, object]) -> dict[str, ast.Pos]:
    """Repeated items (at the repeat) and missing required ones (at the declaration).

    `required` maps each required keyword to its shape for the hint ("start: STATE");
    `present` says which items an AST built in code holds (see `header_items`)."""
    first: dict[str, ast.Pos] = {}
    for item in header_items(declaration, present):
        if item.keyword in first:
            report.error(item.pos, f"'{item.keyword}:' is given twice",
                         f"the first is at {at_text(first[item.keyword])}; keep one")
        else:
            first[item.keyword] = item.pos
    missing = [keyword for keyword in required if keyword not in first]
    if missing:
        report.error(
            declaration.pos,
            f"{kind} '{declaration.name.text}' is missing "
            + _and([f"'{m}:'" for m in missing]),
            "add " + _and([f"'{required[m]}'" for m in missing]),
        )
    return first


def header_items(declaration: ast.Declaration,
                 present: Mapping[str, object]) -> tuple[ast.HeaderItem, ...]:
    """The header as written; for an AST built in code (no record), the items whose fields
    hold something (`present`: keyword → field value, from the kind's own checker)."""
    if declaration.header:
        return declaration.header
    at = declaration.pos
    return tuple(ast.HeaderItem(keyword, at) for keyword, value in present.items() if value)


def check_not_empty(header: dict[str, ast.Pos], keyword: str, values: Sequence,
                    what: str, report: Report, hint: str | None = None) -> None:
    if keyword in header and not values:
        report.error(header[keyword], f"'{keyword}:' lists no {what}",
                     hint or f"list at least one {what[:-1]}, separated by commas")


def check_symbols_written(symbols: Iterable[ast.Symbol | None], report: Report) -> None:
    for symbol in symbols:
        if symbol is not None and symbol.text == "":
            report.error(symbol.pos, "a symbol cannot be empty",
                         "write at least one character between the quotes")


def check_typable(symbols: Iterable[ast.Symbol], blank: str | None, report: Report) -> None:
    """An input symbol holding whitespace could never be given: `--input` splits on it."""
    for symbol in symbols:
        if symbol.text != blank and any(char.isspace() for char in symbol.text):
            example = show("_".join(symbol.text.split()) or "space")
            report.error(symbol.pos, f"the input symbol {show(symbol.text)} contains whitespace",
                         "`--input` splits words on whitespace, so no input could hold it: "
                         f"write it without spaces, e.g. {example}")


def unique(items: Sequence[ast.Name | ast.Symbol], what: str, where: str,
           report: Report) -> dict[str, ast.Pos]:
    """First position of each text; a repeat is an error at the repeat."""
    first: dict[str, ast.Pos] = {}
    for item in items:
        if item.text in first:
            shown = show(item.text) if isinstance(item, ast.Symbol) else f"'{item.text}'"
            report.error(item.pos, f"{what} {shown} is listed twice in '{where}:'",
                         f"the first is at {at_text(first[item.text])}")
        else:
            first[item.text] = item.pos
    return first


def check_state(name: ast.Name, states: dict[str, ast.Pos], report: Report) -> bool:
    if name.text in states:
        return True
    report.error(name.pos, f"unknown state '{name.text}'",
                 _unknown_hint(name.text, states, "states", "states"))
    return False


def check_symbol(symbol: ast.Symbol, alphabet: dict[str, ast.Pos], where: str,
                 report: Report) -> bool:
    if symbol.text in alphabet:
        return True
    plural = "symbols" if where == "alphabet" else "tape symbols"
    close = difflib.get_close_matches(symbol.text, list(alphabet), n=1, cutoff=0.6)
    hint = (f"did you mean {show(close[0])}?" if close else
            _unknown_hint(symbol.text, [format_symbol(s) for s in alphabet], plural, where))
    report.error(symbol.pos, f"unknown symbol {show(symbol.text)}", hint)
    return False


@dataclass
class Rows:
    """The explicit and `*` rows of a transition/rule table, as they are checked.

    `explicit[(state, symbol)] = (value, position of the rule)`; `stars[state]` likewise.
    """

    explicit: dict[tuple[str, str], tuple[object, ast.Pos]] = field(default_factory=dict)
    stars: dict[str, tuple[object, ast.Pos, ast.Star]] = field(default_factory=dict)

    def add(self, state: str, selection: tuple[ast.Symbol, ...] | ast.Star, value: object,
            rule_pos: ast.Pos, alphabet: dict[str, ast.Pos], where: str,
            report: Report) -> None:
        if isinstance(selection, ast.Star):
            if state in self.stars:
                report.error(selection.pos, f"a second '*' rule for state '{state}'",
                             f"the first rule is at {at_text(self.stars[state][1])}; "
                             "rules must be deterministic")
            else:
                self.stars[state] = (value, rule_pos, selection)
            return
        for symbol in selection:
            if not check_symbol(symbol, alphabet, where, report):
                continue
            key = (state, symbol.text)
            if key in self.explicit:
                report.error(symbol.pos,
                             f"a second rule for state '{state}' on {show(symbol.text)}",
                             f"the first rule is at {at_text(self.explicit[key][1])}; "
                             "rules must be deterministic")
            else:
                self.explicit[key] = (value, rule_pos)

    def complete(self, declaration: ast.Declaration, kind: str,
                 states: Sequence[str], symbols: Sequence[str], catch_all: str,
                 report: Report) -> dict[tuple[str, str], object] | None:
        """The total table, or None after reporting the missing pairs (one error)."""
        table: dict[tuple[str, str], object] = {}
        missing: list[str] = []
        first_missing_state = None
        for state in states:
            star = self.stars.get(state)
            covered = 0
            for symbol in symbols:
                if (state, symbol) in self.explicit:
                    table[state, symbol] = self.explicit[state, symbol][0]
                elif star is not None:
                    table[state, symbol] = star[0]
                    covered += 1
                else:
                    missing.append(f"({state}, {format_symbol(symbol)})")
                    first_missing_state = first_missing_state or state
            if star is not None and covered == 0:
                report.warning(star[2].pos,
                               f"'*' covers no symbol: every symbol already has a rule "
                               f"from state '{state}'",
                               f"remove the '*' rule at {at_text(star[1])}")
        if missing:
            noun = "pair" if len(missing) == 1 else "pairs"
            report.error(
                declaration.pos,
                f"{kind} '{declaration.name.text}' has no rule for {len(missing)} "
                f"(state, symbol) {noun}: {_listing(missing)}",
                f"add the rules, or a catch-all such as '{first_missing_state} * -> {catch_all}'",
            )
            return None
        return table


def warn_unreachable(checked: Checked,
                     states: Sequence[ast.Name], report: Report) -> None:
    from lat.compiler.graph import unreachable_states  # networkx: loaded when first needed

    positions = {}
    for name in states:
        positions.setdefault(name.text, name.pos)
    for state in unreachable_states(checked):
        report.warning(positions[state],
                       f"state '{state}' is unreachable from the start state '{checked.start}'",
                       "remove it, or add a rule that leads to it")
