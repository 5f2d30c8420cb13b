"""Automata as graphs (networkx): reachability, minimisation and DOT export.

The checker uses `unreachable_states` for its warnings; `minimise` gives the smallest
automaton with the same language (fewer states means a smaller compiled model); `to_dot`
and `to_ast` turn an automaton back into something a person reads — a picture or a `.lat`
program (with `printer.format_program`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import networkx as nx

from lat.compiler import ast
from lat.compiler.ir import Checked, CheckedAutomaton, frozen_mapping
from lat.compiler.printer import format_symbol


def state_graph(a: Checked) -> nx.MultiDiGraph:
    """States as nodes, one edge per (state, symbol) keyed and labelled by the symbol, as
    the declaration's kind draws it (`Kind.state_graph`).

    Automaton nodes carry `start` and `accept`; machine nodes `start` and `halt`, and
    machine edges also `write` and `move`. A kind without states is a TypeError.
    """
    from lat.compiler.kinds import kind_of

    kind = kind_of(a)
    if kind.state_graph is None:
        raise TypeError(f"a {kind.name} has no states to draw as a graph")
    return kind.state_graph(a)


def reachable_states(a: Checked) -> list[str]:
    """The states some input leads to from the start state, in declaration order."""
    graph = state_graph(a)
    reached = nx.descendants(graph, a.start) | {a.start}
    return [state for state in a.states if state in reached]


def unreachable_states(a: Checked) -> list[str]:
    """The states no input leads to from the start state, in declaration order."""
    reached = set(reachable_states(a))
    return [state for state in a.states if state not in reached]


def minimise(a: CheckedAutomaton) -> CheckedAutomaton:
    """The minimal total DFA with the same language.

    Drops unreachable states, then merges equivalent states by partition refinement
    (Moore's algorithm: split blocks by the blocks their successors fall in until nothing
    splits). Each class keeps the name of its first-declared member and the states keep
    declaration order, so the result reads like the input with states removed.
    """
    states = reachable_states(a)
    table = a.transition_table
    block = {state: int(state in a.accept) for state in states}
    count = len(set(block.values()))
    while True:
        signatures: dict[tuple, int] = {}
        refined = {}
        for state in states:
            signature = (block[state],
                         *(block[table[state, symbol]] for symbol in a.alphabet))
            refined[state] = signatures.setdefault(signature, len(signatures))
        block = refined
        if len(signatures) == count:
            break
        count = len(signatures)

    representative: dict[int, str] = {}
    for state in states:
        representative.setdefault(block[state], state)
    kept = [state for state in states if representative[block[state]] == state]
    merged = {
        (state, symbol): representative[block[table[state, symbol]]]
        for state in kept for symbol in a.alphabet
    }
    result = CheckedAutomaton(
        name=a.name,
        alphabet=a.alphabet,
        states=tuple(kept),
        start=representative[block[a.start]],
        accept=frozenset(state for state in kept if state in a.accept),
        transition_table=frozen_mapping(merged),
        source=a.source,
    )
    return replace(result, source=to_ast(result))


def to_ast(a: CheckedAutomaton) -> ast.Automaton:
    """An automaton declaration for `a`, written compactly.

    Per state, symbols with the same target are joined with `|`; the largest such group
    becomes `*` when it has two symbols or more (or is the only group).
    """

    def symbol(text: str) -> ast.Symbol:
        return ast.Symbol(text, quoted=format_symbol(text).startswith('"'))

    transitions: list[ast.Transition] = []
    for state in a.states:
        groups: dict[str, list[str]] = defaultdict(list)
        for text in a.alphabet:
            groups[a.transition_table[state, text]].append(text)
        star_target = max(groups, key=lambda target: len(groups[target]))
        if len(groups[star_target]) < 2 and len(groups) > 1:
            star_target = None
        for target, texts in groups.items():
            if target != star_target:
                transitions.append(ast.Transition(
                    ast.Name(state), tuple(symbol(t) for t in texts), ast.Name(target)))
        if star_target is not None:
            transitions.append(ast.Transition(ast.Name(state), ast.Star(),
                                              ast.Name(star_target)))
    accept = tuple(ast.Name(state) for state in a.states if state in a.accept)
    keywords = ["alphabet", "states", "start"] + (["accept"] if accept else [])
    return ast.Automaton(
        name=ast.Name(a.name),
        alphabet=tuple(symbol(text) for text in a.alphabet),
        states=tuple(ast.Name(state) for state in a.states),
        start=ast.Name(a.start),
        accept=accept,
        transitions=tuple(transitions),
        header=tuple(ast.HeaderItem(keyword) for keyword in keywords),
    )


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(a: CheckedAutomaton) -> str:
    """Graphviz DOT text: an arrow into the start state, double circles for accepting
    states, and one edge per (state, target) labelled with all its symbols."""
    lines = [f"digraph {_dot_id(a.name)} {{", "  rankdir=LR;", "  node [shape=circle];",
             '  "#start" [shape=point, label=""];', f'  "#start" -> {_dot_id(a.start)};']
    for state in a.states:
        shape = "doublecircle" if state in a.accept else "circle"
        lines.append(f"  {_dot_id(state)} [shape={shape}];")
    labels: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (state, symbol), target in a.transition_table.items():
        labels[state, target].append(symbol)
    for (state, target), symbols in labels.items():
        lines.append(f"  {_dot_id(state)} -> {_dot_id(target)} "
                     f"[label={_dot_id(', '.join(symbols))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
