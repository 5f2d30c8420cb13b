"""Checker: AST → checked IR; errors located, first in source order; warnings collected."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from lat.compiler import ast
from lat.compiler.check import check_program
from lat.compiler.errors import LatError
from lat.compiler.ir import CheckedAutomaton, CheckedMachine, CheckedMemory, CheckedProgram
from lat.compiler.parse import parse_program
from lat.testing import automaton_sources

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


def check(text: str) -> CheckedProgram:
    return check_program(parse_program(text, "t.lat"))


def error_of(text: str):
    with pytest.raises(LatError) as caught:
        check(text)
    return caught.value.diagnostic


INCREMENT = """
machine increment {
  tape: 0, 1, _
  blank: _
  states: carry, done
  start: carry
  halt: done
  bound: steps 64, tape 32
  carry 1 -> 0 R carry
  carry 0 | _ -> 1 S done
}
"""


@pytest.mark.parametrize("path", sorted(PROGRAMS.glob("*.lat")), ids=lambda p: p.stem)
def test_shipped_programs_check_cleanly(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "each program begins with a comment saying what it computes"
    checked = check_program(parse_program(text, path.name))
    assert checked.warnings == ()
    assert len(checked.declarations) >= 1


def test_automaton_is_normalised() -> None:
    text = """
        automaton a {
          accept: q
          alphabet: x, y, z
          states: p, q
          start: p
          p x | y -> q
          p * -> p
          q * -> q
        }"""
    a = check(text).get(None)
    assert isinstance(a, CheckedAutomaton)
    assert a.name == "a" and a.alphabet == ("x", "y", "z") and a.states == ("p", "q")
    assert a.start == "p" and a.accept == frozenset({"q"})
    assert dict(a.transition_table) == {
        ("p", "x"): "q", ("p", "y"): "q", ("p", "z"): "p",
        ("q", "x"): "q", ("q", "y"): "q", ("q", "z"): "q",
    }
    assert list(a.transition_table) == [(s, c) for s in ("p", "q") for c in ("x", "y", "z")]
    with pytest.raises(TypeError):
        a.transition_table["p", "x"] = "p"  # type: ignore[index]
    assert {a: 1}[check(text).get(None)] == 1  # hashable and equal across checks


def test_star_covers_symbols_ruled_after_it_too() -> None:
    a = check("automaton a { alphabet: x, y states: p start: p p * -> p p x -> p }").get(None)
    assert dict(a.transition_table) == {("p", "x"): "p", ("p", "y"): "p"}


def test_memory_is_normalised() -> None:
    m = check("memory m { b -> 2  a -> 1  c -> 2  default: 0 }").get("m")
    assert isinstance(m, CheckedMemory)
    assert dict(m.table) == {"b": "2", "a": "1", "c": "2"}
    assert m.keys == ("b", "a", "c")
    assert m.values == ("2", "1", "0")
    assert m.default == "0"
    no_default = check("memory m { a -> 1 b -> 1 }").get(None)
    assert no_default.default is None and no_default.values == ("1",)
    known_default = check("memory m { a -> 1 default: 1 }").get(None)
    assert known_default.values == ("1",)


def test_machine_is_normalised() -> None:
    m = check(INCREMENT).get("increment")
    assert isinstance(m, CheckedMachine)
    assert m.tape == ("0", "1", "_") and m.blank == "_"
    assert m.states == ("carry", "done") and m.start == "carry" and m.halt == {"done"}
    assert (m.max_steps, m.tape_cells) == (64, 32)
    assert dict(m.rule_table) == {
        ("carry", "0"): ("1", "S", "done"),
        ("carry", "1"): ("0", "R", "carry"),
        ("carry", "_"): ("1", "S", "done"),
    }


def test_get_by_name_and_errors() -> None:
    program = check("memory alpha { a -> 1 }\nmemory beta { b -> 2 }\n")
    assert program.get("beta").name == "beta"
    with pytest.raises(LatError) as several:
        program.get(None)
    assert several.value.diagnostic.hint == "pass --name, one of: alpha, beta"
    with pytest.raises(LatError) as unknown:
        program.get("alpah")
    assert "did you mean 'alpha'?" in unknown.value.diagnostic.hint
    assert "alpha, beta" in unknown.value.diagnostic.hint
    with pytest.raises(LatError):
        check("").get(None)


def test_first_error_in_source_order_wins() -> None:
    diagnostic = error_of("""automaton a {
  alphabet: x
  states: p
  start: p
  p x -> nowhere
  p y -> p
}
automaton a {
  alphabet: x
}""")
    assert (diagnostic.pos.line, diagnostic.message) == (5, "unknown state 'nowhere'")


def test_header_after_transition_still_orders_by_position() -> None:
    diagnostic = error_of("automaton a {\n p x -> p\n p x -> p\n alphabet: x, x\n"
                          " states: p\n start: p\n}")
    assert diagnostic.pos == ast.Pos(3, 4)
    assert "second rule" in diagnostic.message and "2:2" in diagnostic.hint


def test_missing_rules_wait_for_other_errors() -> None:
    diagnostic = error_of("automaton a { alphabet: x, y states: p, q start: p p x -> r }")
    assert diagnostic.message == "unknown state 'r'"


def test_missing_rules_listed_at_declaration() -> None:
    diagnostic = error_of("\n\nautomaton a {\n alphabet: x, y\n states: p, q\n start: p\n"
                          " p x -> q\n}")
    assert diagnostic.pos == ast.Pos(3, 1)
    assert diagnostic.message == ("automaton 'a' has no rule for 3 (state, symbol) pairs: "
                                  "(p, y), (q, x), (q, y)")
    assert diagnostic.hint == "add the rules, or a catch-all such as 'p * -> STATE'"


def test_halting_states_need_no_rules() -> None:
    m = check(INCREMENT).get(None)
    assert all(state != "done" for state, _ in m.rule_table)


@pytest.mark.parametrize(
    ("text", "message", "hint_part"),
    [
        ("automaton a { alphabet: x states: p start: p accept: p p x -> p accept: }",
         "'accept:' is given twice", "the first is at"),
        ("automaton a { alphabet: x states: p start: p accept: }",
         "'accept:' lists no states", "leave out 'accept:'"),
        ("automaton a { alphabet: x states: p start: p accept: p, p p x -> p }",
         "state 'p' is listed twice in 'accept:'", "the first is at"),
        ("automaton a { alphabet: x states: p, q start: p p x -> q q y -> p }",
         "unknown symbol 'y'", "the symbols are: x"),
        ('automaton a { alphabet: "a-b" states: p start: p p "a-c" -> p }',
         'unknown symbol "a-c"', 'did you mean "a-b"?'),
        ('automaton a { alphabet: "a b" states: p start: p p * -> p }',
         'the input symbol "a b" contains whitespace', "e.g. 'a_b'"),
        ('machine m { tape: "x y", " " blank: " " states: p, h start: p halt: h '
         'bound: steps 2, tape 2 p * -> " " S h }',
         'the input symbol "x y" contains whitespace', "`--input` splits"),
        ("", "the file declares nothing", "write an automaton"),
        ("# only a comment\n", "the file declares nothing", "write an automaton"),
        ("automaton a { states: p start: p }", "automaton 'a' is missing 'alphabet:'",
         "'alphabet: SYMBOL, ...'"),
        ("automaton a { alphabet: x start: p }", "automaton 'a' is missing 'states:'",
         "add 'states: STATE, ...'"),
        ("automaton a { alphabet: x states: start: p }", "'states:' lists no states",
         "at least one state"),
        ("machine m { tape: 0, _ blank: _ states: q, h start: q halt: h "
         "bound: steps 5, tape 0 q * -> 0 R h }", "'bound:' tape must be at least 1, not 0",
         "bound: steps"),
        ("machine m { tape: 0, _ blank: _ states: q, h start: q halt: "
         "bound: steps 5, tape 5 q * -> 0 R h }", "'halt:' lists no states", "halting state"),
        ("machine m { tape: 0, _ blank: _ states: q, h start: q halt: h "
         "bound: steps 5, tape 5 q 0 -> 0 R h q * -> 0 R h q * -> _ L q }",
         "a second '*' rule for state 'q'", "deterministic"),
        ("machine m { tape: 0, _, 0 blank: _ states: q, h start: q halt: h "
         "bound: steps 5, tape 5 q * -> 0 R h }", "symbol '0' is listed twice in 'tape:'",
         "the first is at"),
        ("machine m { tape: 0, _ blank: _ states: q, h start: x halt: h "
         "bound: steps 5, tape 5 q * -> 0 R h }", "unknown state 'x'", "the states are: q, h"),
        ("machine m { tape: 0, _ blank: _ states: q, h start: q halt: h "
         "bound: steps 5, tape 5 q * -> 0 R h2 }", "unknown state 'h2'", "did you mean 'h'?"),
        ("machine m { tape: 0, _ blank: _ states: q, h start: q halt: h "
         "bound: steps 5, tape 5 q 1 -> 0 R h }", "unknown symbol '1'", "the tape symbols are"),
        ('memory m { a -> "" }', "a symbol cannot be empty", "between the quotes"),
        ("memory m { a -> 1 } memory n { a -> 1 a -> 2 }", "key 'a' is listed twice",
         "the first is at 1:32"),
    ],
)
def test_errors(text: str, message: str, hint_part: str) -> None:
    diagnostic = error_of(text)
    assert diagnostic.message == message
    assert diagnostic.hint is not None and hint_part in diagnostic.hint
    assert diagnostic.severity == "error" and diagnostic.filename == "t.lat"
    assert diagnostic.pos.line >= 1 and diagnostic.pos.col >= 1


def test_unknown_name_hint_without_candidates() -> None:
    diagnostic = error_of("automaton a { alphabet: x start: p }")
    assert "missing 'states:'" in diagnostic.message


def test_missing_rules_list_is_capped() -> None:
    states = ", ".join(f"s{i}" for i in range(30))
    diagnostic = error_of(f"automaton a {{ alphabet: x states: {states} start: s0 }}")
    assert diagnostic.message.endswith("(s9, x) and 20 more")


def test_warnings_unreachable_and_useless_star_in_source_order() -> None:
    program = check("""automaton a {
  alphabet: x
  states: p, lost, q
  start: p
  p x -> p
  p * -> q
  lost * -> lost
  q x -> q
}
machine m {
  tape: 0, _
  blank: _
  states: go, stuck, done
  start: go
  halt: done
  bound: steps 3, tape 3
  go * -> _ S done
  stuck * -> 0 R stuck
}""")
    assert [(w.pos.line, w.severity) for w in program.warnings] == [
        (3, "warning"), (3, "warning"), (6, "warning"), (13, "warning")]
    messages = [w.message for w in program.warnings]
    assert messages[0] == "state 'lost' is unreachable from the start state 'p'"
    assert "'q' is unreachable" in messages[1]
    assert messages[2].startswith("'*' covers no symbol")
    assert "'stuck' is unreachable" in messages[3]
    assert str(program.warnings[0]).startswith("t.lat:3:14: warning: ")


def test_ast_built_in_code_is_checked_by_its_fields() -> None:
    p, x = ast.Name("p"), ast.Symbol("x")
    automaton = ast.Automaton(ast.Name("a"), (x,), (p,), p, (p,), (ast.Transition(p, (x,), p),))
    checked = check_program(ast.Program((automaton,)))
    assert checked.get(None).transition_table == {("p", "x"): "p"}
    missing = ast.Automaton(ast.Name("a"), (x,), (p,), ast.Name(""), (), ())
    with pytest.raises(LatError, match="missing 'start:'"):
        check_program(ast.Program((missing,)))


@given(automaton_sources(max_states=12))
def test_generated_automata_check_and_are_total(text: str) -> None:
    automaton = check(text).get(None)
    assert isinstance(automaton, CheckedAutomaton)
    assert set(automaton.transition_table) == {
        (state, symbol) for state in automaton.states for symbol in automaton.alphabet}
    assert set(automaton.transition_table.values()) <= set(automaton.states)
