"""Printer: canonical text, and print → parse round-trips (DESIGN.md §8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings

from lat.compiler import ast
from lat.compiler.parse import parse_program
from lat.compiler.printer import format_program, format_symbol
from lat.testing import automaton_sources, program_asts

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("a", "a"), ("_x9", "_x9"), ("0", "0"), ("007", "007"), ("a b", '"a b"'),
        ("states", '"states"'), ("L", "L"), ("9a", '"9a"'), ("", '""'),
        ('say "hi"', r'"say \"hi\""'), ("back\\slash", r'"back\\slash"'),
        ("two\nlines", r'"two\nlines"'), ("é", '"é"'),
        ("-1", '"-1"'),
    ],
)
def test_format_symbol(text: str, written: str) -> None:
    assert format_symbol(text) == written
    assert format_symbol(ast.Symbol(text, quoted=True)) == written


def test_canonical_layout() -> None:
    text = """# comment
machine m { bound: steps 9, tape 4  q "a b" | 1 -> _ R h  halt: h start: q states: q, h
  blank: _ tape: 1, "a b", _ }
memory mem { default: "?" k -> v }
automaton a { q * -> q accept: q start: q states: q alphabet: x }
"""
    assert format_program(parse_program(text)) == """machine m {
  tape: 1, "a b", _
  blank: _
  states: q, h
  start: q
  halt: h
  bound: steps 9, tape 4
  q "a b" | 1 -> _ R h
}

memory mem {
  k -> v
  default: "?"
}

automaton a {
  alphabet: x
  states: q
  start: q
  accept: q
  q * -> q
}
"""


def test_empty_program_prints_nothing() -> None:
    assert format_program(ast.Program(())) == ""


@pytest.mark.parametrize("path", sorted(PROGRAMS.glob("*.lat")), ids=lambda p: p.stem)
def test_shipped_programs_round_trip_and_formatting_is_idempotent(path: Path) -> None:
    program = parse_program(path.read_text(encoding="utf-8"))
    text = format_program(program)
    assert parse_program(text) == program
    assert format_program(parse_program(text)) == text


@settings(max_examples=150)
@given(program_asts())
def test_print_parse_round_trips_random_asts(program: ast.Program) -> None:
    text = format_program(program)
    assert parse_program(text) == program
    assert format_program(parse_program(text)) == text


@given(automaton_sources(max_states=8))
def test_print_parse_round_trips_generated_sources(source: str) -> None:
    program = parse_program(source)
    assert parse_program(format_program(program)) == program
