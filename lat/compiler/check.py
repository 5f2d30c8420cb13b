"""Semantic checks: `ast.Program` → `ir.CheckedProgram`, or the first mistake, located.

Everything the later passes rely on is proved here once — names are known and unique,
tables are deterministic and total, bounds are positive — so the interpreter, the graph
algorithms and the lowering never meet a malformed program. Errors are collected per
declaration and the one earliest in the source is raised, so fixing a file top to bottom
never sees the messages jump around. Totality ("missing rules") is judged only for a
declaration with no other error, since unknown names make the missing set meaningless; it
is reported at the declaration, whose line comes first. Warnings (unreachable states, a `*`
that covers nothing) are returned in source order with the checked program.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lat.compiler import ast
from lat.compiler.errors import Diagnostic, LatError, did_you_mean
from lat.compiler.ir import (
    Checked,
    CheckedAutomaton,
    CheckedMachine,
    CheckedMemory,
    CheckedProgram,
    frozen_mapping,
)
from lat.compiler.printer import format_symbol

MOVES = ("L", "R", "S")
_LISTED = 10  # how many missing pairs, names ... a message spells out before "and N more"

_SHAPES = {
    "alphabet": "alphabet: SYMBOL, ...",
    "states": "states: STATE, ...",
    "start": "start: STATE",
    "tape": "tape: SYMBOL, ...",
    "blank": "blank: SYMBOL",
    "halt": "halt: STATE, ...",
    "bound": "bound: steps N, tape M",
}


def check_program(program: ast.Program) -> CheckedProgram:
    """Check every declaration of `program`.

    Raises `LatError` with the first error in source order; returns the checked, normalised
    declarations and the warnings otherwise.
    """
    report = _Report(program.filename)
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
                         f"the first is at {_at(first)}; rename one")
        else:
            first_seen[name.text] = declaration
        if isinstance(declaration, ast.Automaton):
            result: Checked | None = _check_automaton(declaration, report)
        elif isinstance(declaration, ast.Memory):
            result = _check_memory(declaration, report)
        else:
            result = _check_machine(declaration, report)
        if result is not None:
            checked.append(result)
    if report.errors:
        raise LatError(min(report.errors, key=lambda d: d.pos))
    warnings = sorted(report.warnings, key=lambda d: d.pos)
    return CheckedProgram(tuple(checked), tuple(warnings), program.filename)


# --------------------------------------------------------------------------- helpers


@dataclass
class _Report:
    filename: str
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def error(self, pos: ast.Pos, message: str, hint: str | None = None) -> None:
        self.errors.append(Diagnostic(self.filename, pos, message, hint))

    def warning(self, pos: ast.Pos, message: str, hint: str | None = None) -> None:
        self.warnings.append(Diagnostic(self.filename, pos, message, hint, severity="warning"))


def _at(pos: ast.Pos) -> str:
    return f"{pos.line}:{pos.col}"


def _show(text: str) -> str:
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


def _check_header(declaration: ast.Declaration, kind: str, required: Sequence[str],
                  report: _Report) -> dict[str, ast.Pos]:
    """Repeated items (at the repeat) and missing required ones (at the declaration)."""
    first: dict[str, ast.Pos] = {}
    for item in _header_items(declaration):
        if item.keyword in first:
            report.error(item.pos, f"'{item.keyword}:' is given twice",
                         f"the first is at {_at(first[item.keyword])}; keep one")
        else:
            first[item.keyword] = item.pos
    missing = [keyword for keyword in required if keyword not in first]
    if missing:
        report.error(
            declaration.pos,
            f"{kind} '{declaration.name.text}' is missing "
            + _and([f"'{m}:'" for m in missing]),
            "add " + _and([f"'{_SHAPES[m]}'" for m in missing]),
        )
    return first


def _header_items(declaration: ast.Declaration) -> tuple[ast.HeaderItem, ...]:
    """The header as written; for an AST built in code (no record), what its fields hold."""
    if declaration.header:
        return declaration.header
    at = declaration.pos
    if isinstance(declaration, ast.Automaton):
        present = {"alphabet": declaration.alphabet, "states": declaration.states,
                   "start": declaration.start.text, "accept": declaration.accept}
    elif isinstance(declaration, ast.Memory):
        present = {"default": declaration.default is not None}
    else:
        present = {"tape": declaration.tape, "blank": declaration.blank.pos != ast.NOWHERE
                   or declaration.blank.text, "states": declaration.states,
                   "start": declaration.start.text, "halt": declaration.halt,
                   "bound": declaration.bound != ast.Bound(0, 0)}
    return tuple(ast.HeaderItem(keyword, at) for keyword, value in present.items() if value)


def _check_not_empty(header: dict[str, ast.Pos], keyword: str, values: Sequence,
                     what: str, report: _Report, hint: str | None = None) -> None:
    if keyword in header and not values:
        report.error(header[keyword], f"'{keyword}:' lists no {what}",
                     hint or f"list at least one {what[:-1]}, separated by commas")


def _check_symbols_written(symbols: Iterable[ast.Symbol | None], report: _Report) -> None:
    for symbol in symbols:
        if symbol is not None and symbol.text == "":
            report.error(symbol.pos, "a symbol cannot be empty",
                         "write at least one character between the quotes")


def _check_typable(symbols: Iterable[ast.Symbol], blank: str | None, report: _Report) -> None:
    """An input symbol holding whitespace could never be given: `--input` splits on it."""
    for symbol in symbols:
        if symbol.text != blank and any(char.isspace() for char in symbol.text):
            example = _show("_".join(symbol.text.split()) or "space")
            report.error(symbol.pos, f"the input symbol {_show(symbol.text)} contains whitespace",
                         "`--input` splits words on whitespace, so no input could hold it: "
                         f"write it without spaces, e.g. {example}")


def _unique(items: Sequence[ast.Name | ast.Symbol], what: str, where: str,
            report: _Report) -> dict[str, ast.Pos]:
    """First position of each text; a repeat is an error at the repeat."""
    first: dict[str, ast.Pos] = {}
    for item in items:
        if item.text in first:
            shown = _show(item.text) if isinstance(item, ast.Symbol) else f"'{item.text}'"
            report.error(item.pos, f"{what} {shown} is listed twice in '{where}:'",
                         f"the first is at {_at(first[item.text])}")
        else:
            first[item.text] = item.pos
    return first


def _check_state(name: ast.Name, states: dict[str, ast.Pos], report: _Report) -> bool:
    if name.text in states:
        return True
    report.error(name.pos, f"unknown state '{name.text}'",
                 _unknown_hint(name.text, states, "states", "states"))
    return False


def _check_symbol(symbol: ast.Symbol, alphabet: dict[str, ast.Pos], where: str,
                  report: _Report) -> bool:
    if symbol.text in alphabet:
        return True
    plural = "symbols" if where == "alphabet" else "tape symbols"
    close = difflib.get_close_matches(symbol.text, list(alphabet), n=1, cutoff=0.6)
    hint = (f"did you mean {_show(close[0])}?" if close else
            _unknown_hint(symbol.text, [format_symbol(s) for s in alphabet], plural, where))
    report.error(symbol.pos, f"unknown symbol {_show(symbol.text)}", hint)
    return False


@dataclass
class _Rows:
    """The explicit and `*` rows of a transition/rule table, as they are checked.

    `explicit[(state, symbol)] = (value, position of the rule)`; `stars[state]` likewise.
    """

    explicit: dict[tuple[str, str], tuple[object, ast.Pos]] = field(default_factory=dict)
    stars: dict[str, tuple[object, ast.Pos, ast.Star]] = field(default_factory=dict)

    def add(self, state: str, selection: tuple[ast.Symbol, ...] | ast.Star, value: object,
            rule_pos: ast.Pos, alphabet: dict[str, ast.Pos], where: str,
            report: _Report) -> None:
        if isinstance(selection, ast.Star):
            if state in self.stars:
                report.error(selection.pos, f"a second '*' rule for state '{state}'",
                             f"the first rule is at {_at(self.stars[state][1])}; "
                             "rules must be deterministic")
            else:
                self.stars[state] = (value, rule_pos, selection)
            return
        for symbol in selection:
            if not _check_symbol(symbol, alphabet, where, report):
                continue
            key = (state, symbol.text)
            if key in self.explicit:
                report.error(symbol.pos,
                             f"a second rule for state '{state}' on {_show(symbol.text)}",
                             f"the first rule is at {_at(self.explicit[key][1])}; "
                             "rules must be deterministic")
            else:
                self.explicit[key] = (value, rule_pos)

    def complete(self, declaration: ast.Automaton | ast.Machine, kind: str,
                 states: Sequence[str], symbols: Sequence[str], catch_all: str,
                 report: _Report) -> dict[tuple[str, str], object] | None:
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
                               f"remove the '*' rule at {_at(star[1])}")
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


def _warn_unreachable(checked: CheckedAutomaton | CheckedMachine,
                      states: Sequence[ast.Name], report: _Report) -> None:
    from lat.compiler.graph import unreachable_states  # networkx: loaded when first needed

    positions = {}
    for name in states:
        positions.setdefault(name.text, name.pos)
    for state in unreachable_states(checked):
        report.warning(positions[state],
                       f"state '{state}' is unreachable from the start state '{checked.start}'",
                       "remove it, or add a rule that leads to it")


# --------------------------------------------------------------------------- automaton


def _check_automaton(a: ast.Automaton, report: _Report) -> CheckedAutomaton | None:
    errors_before = len(report.errors)
    header = _check_header(a, "automaton", ("alphabet", "states", "start"), report)
    _check_not_empty(header, "alphabet", a.alphabet, "symbols", report)
    _check_not_empty(header, "states", a.states, "states", report)
    _check_not_empty(header, "accept", a.accept, "states", report,
                     "leave out 'accept:' for an automaton that accepts nothing")
    _check_symbols_written(a.alphabet, report)
    _check_typable(a.alphabet, None, report)
    alphabet = _unique(a.alphabet, "symbol", "alphabet", report)
    states = _unique(a.states, "state", "states", report)
    if "start" in header:
        _check_state(a.start, states, report)
    for name in a.accept:
        _check_state(name, states, report)
    _unique(a.accept, "state", "accept", report)

    rows = _Rows()
    for t in a.transitions:
        if _check_state(t.state, states, report):
            rows.add(t.state.text, t.symbols, t.target.text, t.pos, alphabet, "alphabet", report)
        _check_state(t.target, states, report)
    if len(report.errors) > errors_before:
        return None

    table = rows.complete(a, "automaton", list(states), list(alphabet), "STATE", report)
    if table is None:
        return None
    checked = CheckedAutomaton(
        name=a.name.text,
        alphabet=tuple(alphabet),
        states=tuple(states),
        start=a.start.text,
        accept=frozenset(name.text for name in a.accept),
        transition_table=frozen_mapping(table),
        source=a,
    )
    _warn_unreachable(checked, a.states, report)
    return checked


# --------------------------------------------------------------------------- memory


def _check_memory(m: ast.Memory, report: _Report) -> CheckedMemory | None:
    errors_before = len(report.errors)
    _check_header(m, "memory", (), report)
    if not m.entries:
        report.error(m.pos, f"memory '{m.name.text}' has no entries", "add lines KEY -> VALUE")
    _check_symbols_written([e.key for e in m.entries] + [e.value for e in m.entries]
                           + [m.default], report)
    first: dict[str, ast.Pos] = {}
    for entry in m.entries:
        if entry.key.text in first:
            report.error(entry.key.pos, f"key {_show(entry.key.text)} is listed twice",
                         f"the first is at {_at(first[entry.key.text])}; "
                         "a memory maps each key to one value")
        else:
            first[entry.key.text] = entry.pos
    if len(report.errors) > errors_before:
        return None
    return CheckedMemory(
        name=m.name.text,
        table=frozen_mapping({e.key.text: e.value.text for e in m.entries}),
        default=m.default.text if m.default is not None else None,
        source=m,
    )


# --------------------------------------------------------------------------- machine


def _check_machine(m: ast.Machine, report: _Report) -> CheckedMachine | None:
    errors_before = len(report.errors)
    header = _check_header(m, "machine", ("tape", "blank", "states", "start", "halt", "bound"),
                           report)
    _check_not_empty(header, "tape", m.tape, "symbols", report)
    _check_not_empty(header, "states", m.states, "states", report)
    _check_not_empty(header, "halt", m.halt, "states", report,
                     "a machine needs at least one halting state to stop in")
    _check_symbols_written([*m.tape, m.blank if "blank" in header else None], report)
    _check_typable(m.tape, m.blank.text if "blank" in header else None, report)
    tape = _unique(m.tape, "symbol", "tape", report)
    states = _unique(m.states, "state", "states", report)
    if "blank" in header and "tape" in header and m.blank.text not in tape:
        report.error(m.blank.pos, f"the blank symbol {_show(m.blank.text)} is not in 'tape:'",
                     "add it to the tape alphabet")
    if "start" in header:
        _check_state(m.start, states, report)
    for name in m.halt:
        _check_state(name, states, report)
    _unique(m.halt, "state", "halt", report)
    if "bound" in header:
        for what, value in (("steps", m.bound.steps), ("tape", m.bound.tape)):
            if value < 1:
                report.error(m.bound.pos, f"'bound:' {what} must be at least 1, not {value}",
                             "write e.g. 'bound: steps 100, tape 16'")
    halting = {name.text for name in m.halt}

    rows = _Rows()
    for r in m.rules:
        known = _check_state(r.state, states, report)
        if known and r.state.text in halting:
            report.error(r.state.pos, f"a rule from the halting state '{r.state.text}'",
                         "a machine stops in a halting state, so this rule never runs: "
                         "remove it, or take the state out of 'halt:'")
            known = False
        _check_symbol(r.write, tape, "tape", report)
        if r.move not in MOVES:
            report.error(r.move_pos, f"unknown move '{r.move}'",
                         "MOVE is L (left), R (right) or S (stay)")
        _check_state(r.target, states, report)
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
    _warn_unreachable(checked, m.states, report)
    return checked
