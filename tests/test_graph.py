"""Graph algorithms: reachability, minimisation (checked against independent product-
automaton arguments, not against itself), DOT export and conversion back to source."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lat.compiler import ast
from lat.compiler.check import check_program
from lat.compiler.graph import (
    minimise,
    reachable_states,
    state_graph,
    to_ast,
    to_dot,
    unreachable_states,
)
from lat.compiler.interpret import run_automaton
from lat.compiler.ir import CheckedAutomaton
from lat.compiler.parse import parse_program
from lat.compiler.printer import format_program
from lat.testing import automaton_sources, words

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


def load(text: str):
    return check_program(parse_program(text)).get(None)


def distinguishing_pair(a: CheckedAutomaton, b: CheckedAutomaton, p: str, q: str) -> bool:
    """Whether some word leads a from p and b from q to states that disagree on acceptance
    (breadth-first search over the product automaton)."""
    seen = {(p, q)}
    queue = deque(seen)
    while queue:
        x, y = queue.popleft()
        if (x in a.accept) != (y in b.accept):
            return True
        for symbol in a.alphabet:
            pair = (a.transition_table[x, symbol], b.transition_table[y, symbol])
            if pair not in seen:
                seen.add(pair)
                queue.append(pair)
    return False


def assert_minimal_and_equivalent(original: CheckedAutomaton,
                                  small: CheckedAutomaton) -> None:
    assert small.alphabet == original.alphabet
    assert not distinguishing_pair(original, small, original.start, small.start)
    assert unreachable_states(small) == []
    for i, p in enumerate(small.states):
        for q in small.states[i + 1:]:
            assert distinguishing_pair(small, small, p, q), f"{p} and {q} are equivalent"
    order = {state: index for index, state in enumerate(original.states)}
    assert list(small.states) == sorted(small.states, key=order.__getitem__)


def test_state_graph_has_one_edge_per_pair() -> None:
    parity = load((PROGRAMS / "parity.lat").read_text())
    graph = state_graph(parity)
    assert list(graph.nodes) == ["even", "odd"]
    assert graph.nodes["even"] == {"start": True, "accept": True}
    assert graph.number_of_edges() == 4
    assert graph.has_edge("even", "odd", key="1")
    assert graph.edges["odd", "even", "1"]["symbol"] == "1"


def test_unreachable_states_for_automata_and_machines() -> None:
    automaton = load("automaton a { alphabet: x states: z, p, lost, q start: p "
                     "p * -> q q * -> p lost * -> z z * -> p }")
    assert unreachable_states(automaton) == ["z", "lost"]
    assert reachable_states(automaton) == ["p", "q"]
    machine = load("""machine m { tape: 0, _ blank: _ states: go, spare, done start: go
        halt: done bound: steps 3, tape 3 go * -> 0 R done spare * -> 0 R go }""")
    assert unreachable_states(machine) == ["spare"]
    assert state_graph(machine).edges["go", "done", "0"]["move"] == "R"


def test_minimise_shift_register() -> None:
    shift2 = load((PROGRAMS / "shift2.lat").read_text())
    small = minimise(shift2)
    assert small.states == ("s00", "s01", "s11")  # s10 ≡ s00: both end in 0
    assert small.start == "s00" and small.accept == {"s11"}
    assert small.transition_table["s11", "0"] == "s00"
    assert_minimal_and_equivalent(shift2, small)


def test_minimise_keeps_a_dead_state_and_drops_unreachable_ones() -> None:
    a = load("""automaton a { alphabet: x, y states: p, dead1, dead2, lost start: p accept: p
        p x -> p  p y -> dead1  dead1 x -> dead2  dead1 y -> dead1  dead2 * -> dead1
        lost * -> p }""")
    small = minimise(a)
    assert small.states == ("p", "dead1")
    assert_minimal_and_equivalent(a, small)


SHIPPED_AUTOMATA = sorted(
    p for p in PROGRAMS.glob("*.lat")
    if all(isinstance(d, CheckedAutomaton)
           for d in check_program(parse_program(p.read_text(), p.name)).declarations)
)


@pytest.mark.parametrize("path", SHIPPED_AUTOMATA, ids=lambda p: p.stem)
def test_minimise_shipped_programs(path: Path) -> None:
    automaton = load(path.read_text())
    assert_minimal_and_equivalent(automaton, minimise(automaton))


@given(st.data())
def test_minimise_preserves_language_and_never_grows(data: st.DataObject) -> None:
    automaton = load(data.draw(automaton_sources(max_states=15)))
    small = minimise(automaton)
    assert len(small.states) <= len(automaton.states)
    assert_minimal_and_equivalent(automaton, small)
    for word in data.draw(st.lists(words(automaton.alphabet, max_len=40), max_size=10)):
        assert run_automaton(small, word).output == run_automaton(automaton, word).output
    assert minimise(small) == small


@given(automaton_sources(max_states=10))
def test_to_ast_prints_an_equal_automaton(text: str) -> None:
    automaton = load(text)
    reprinted = format_program(ast.Program((to_ast(automaton),)))
    again = load(reprinted)
    assert again == automaton
    warnings = check_program(parse_program(reprinted)).warnings
    assert not [w for w in warnings if "covers no symbol" in w.message]


def test_to_ast_uses_pipes_and_stars() -> None:
    automaton = load("automaton a { alphabet: a, b, c, d, e states: p, q start: p "
                     "p a | b -> q  p c | d | e -> p  q a -> p  q * -> q }")
    text = format_program(ast.Program((to_ast(automaton),)))
    assert text.splitlines()[4:8] == ["  p a | b -> q", "  p * -> p", "  q a -> p", "  q * -> q"]


def test_minimised_source_is_its_own_ast() -> None:
    small = minimise(load((PROGRAMS / "shift2.lat").read_text()))
    assert small.source == to_ast(small)


@given(automaton_sources(max_states=10))
def test_dot_looks_like_dot(text: str) -> None:
    automaton = load(text)
    dot = to_dot(automaton)
    lines = dot.strip().splitlines()
    assert re.fullmatch(r'digraph "(?:[^"\\]|\\.)*" \{', lines[0])
    assert lines[-1] == "}"
    quoted = r'"(?:[^"\\]|\\.)*"'
    edges = [line for line in lines if re.fullmatch(
        rf"  {quoted} -> {quoted} \[label={quoted}\];", line)]
    pairs = {(s, t) for (s, _), t in automaton.transition_table.items()}
    assert len(edges) == len(pairs)  # parallel edges merged
    assert dot.count("shape=doublecircle") == len(automaton.accept)
    assert '"#start" -> ' in dot
    for line in lines[1:-1]:
        assert line.endswith(";")
