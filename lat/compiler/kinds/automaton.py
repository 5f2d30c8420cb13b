"""The automaton kind: a total DFA, from its checks to its run report (docs/ARCHITECTURE.md,
"Adding a kind").

The lowering itself is lower/automaton.py (one token per input symbol, weights or context
placement) and the reference interpreter `interpret.run_automaton`; this module holds
everything else an automaton means and fills in its `Kind`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lat.compiler import ast
from lat.compiler.check import (
    Report,
    Rows,
    check_header,
    check_not_empty,
    check_state,
    check_symbols_written,
    check_typable,
    unique,
    warn_unreachable,
)
from lat.compiler.interpret import AutomatonRun, run_automaton
from lat.compiler.ir import CheckedAutomaton, frozen_mapping
from lat.compiler.kinds.base import (
    ALWAYS_DENSE_BYTES,
    Kind,
    StepBound,
    report_fields,
    verify_words,
)
from lat.compiler.lower import Estimate
from lat.compiler.printer import INDENT, header_lines, names_text, selection_text, symbols_text

if TYPE_CHECKING:
    import networkx as nx

    from lat.compiler.lower import Lowered
    from lat.compiler.lower.memory import Embedding
    from lat.runtime.execute import RunResult
    from lat.runtime.interface import Interface

REQUIRED = {"alphabet": "alphabet: SYMBOL, ...", "states": "states: STATE, ...",
            "start": "start: STATE"}  # header items, with their shape for a hint
REPORT_KEYS = ("output", "trace", "final_state", "steps")


def check_automaton(a: ast.Automaton, report: Report) -> CheckedAutomaton | None:
    """The checked automaton, or None after reporting what is wrong with `a`."""
    errors_before = len(report.errors)
    header = check_header(a, "automaton", REQUIRED, report, {
        "alphabet": a.alphabet, "states": a.states, "start": a.start.text, "accept": a.accept})
    check_not_empty(header, "alphabet", a.alphabet, "symbols", report)
    check_not_empty(header, "states", a.states, "states", report)
    check_not_empty(header, "accept", a.accept, "states", report,
                    "leave out 'accept:' for an automaton that accepts nothing")
    check_symbols_written(a.alphabet, report)
    check_typable(a.alphabet, None, report)
    alphabet = unique(a.alphabet, "symbol", "alphabet", report)
    states = unique(a.states, "state", "states", report)
    if "start" in header:
        check_state(a.start, states, report)
    for name in a.accept:
        check_state(name, states, report)
    unique(a.accept, "state", "accept", report)

    rows = Rows()
    for t in a.transitions:
        if check_state(t.state, states, report):
            rows.add(t.state.text, t.symbols, t.target.text, t.pos, alphabet, "alphabet", report)
        check_state(t.target, states, report)
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
    warn_unreachable(checked, a.states, report)
    return checked


def format_automaton(a: ast.Automaton) -> list[str]:
    """Canonical lines: header items in a fixed order, then the transitions as written."""
    lines = [f"automaton {a.name.text} {{"]
    lines += header_lines(("alphabet", symbols_text(a.alphabet)),
                          ("states", names_text(a.states)),
                          ("start", a.start.text),
                          ("accept", names_text(a.accept)))
    lines += [f"{INDENT}{t.state.text} {selection_text(t.symbols)} -> {t.target.text}"
              for t in a.transitions]
    return lines


def interpret(a: CheckedAutomaton, word: Sequence[str] | str) -> AutomatonRun:
    return run_automaton(a, word)


def estimate(a: CheckedAutomaton, placement: str, dim: int | None = None) -> Estimate:
    """One head; the state one-hot plus a bos flag; (q, a) keys and their values in context.
    A big automaton's lowering may be sparse: then the lowering's own estimate counts."""
    q, s = len(a.states), len(a.alphabet)
    d_out = q + 2
    d = 1 + q * s + (d_out if placement == "context" else 0)
    dense = Estimate.of(heads=1, d=d, d_out=d_out, working=0, steps=None)
    if dense.weight_bytes < ALWAYS_DENSE_BYTES:
        return dense
    from lat.compiler.lower.automaton import lowering_estimate

    return lowering_estimate(q, s, placement)


def lower_weights(a: CheckedAutomaton, embedding: Embedding | None, filename: str) -> Lowered:
    from lat.compiler.lower.automaton import lower_automaton

    return lower_automaton(a)


def lower_context(a: CheckedAutomaton, embedding: Embedding | None, filename: str) -> Lowered:
    """The universal executor sized for `a`, which binds as the prompt."""
    from lat.compiler.lower.automaton import lower_automaton_context

    return lower_automaton_context(len(a.states), len(a.alphabet))


def bind(interface: Interface, a: CheckedAutomaton) -> Interface:
    from lat.compiler.lower.automaton import bind_automaton

    return bind_automaton(interface, a)


def readout(interface: Interface, result: RunResult) -> dict[str, object]:
    """The states visited (q_0 .. q_n) and the last one."""
    trace = list(result.decoded[interface.trace_field])
    return {"trace": trace, "final_state": trace[-1]}


def expected(a: CheckedAutomaton, word: tuple[str, ...]) -> dict[str, object]:
    return report_fields(run_automaton(a, word), REPORT_KEYS)


def verify_inputs(a: CheckedAutomaton, max_len: int, samples: int,
                  seed: int) -> tuple[list[tuple[str, ...]], str]:
    return verify_words(a.alphabet, max_len, samples, seed)


def longest_input(a: CheckedAutomaton, max_len: int) -> int:
    return max_len


def worst_case_steps(interface: Interface, longest_input: int) -> StepBound:
    return StepBound(longest_input, "one per input symbol:")


def state_graph(a: CheckedAutomaton) -> nx.MultiDiGraph:
    """States with `start` and `accept`; one edge per (state, symbol), keyed by the symbol."""
    import networkx as nx  # loaded when a graph is first wanted

    graph = nx.MultiDiGraph(name=a.name)
    for state in a.states:
        graph.add_node(state, start=state == a.start, accept=state in a.accept)
    for (state, symbol), target in a.transition_table.items():
        graph.add_edge(state, target, key=symbol, symbol=symbol)
    return graph


def minimise(a: CheckedAutomaton) -> CheckedAutomaton:
    from lat.compiler.graph import minimise as minimal

    return minimal(a)


def to_dot(a: CheckedAutomaton) -> str:
    from lat.compiler.graph import to_dot as dot

    return dot(a)


KIND = Kind(
    name="automaton",
    syntax=ast.Automaton,
    checked=CheckedAutomaton,
    check=check_automaton,
    format=format_automaton,
    interpret=interpret,
    estimate=estimate,
    lower={"weights": lower_weights, "context": lower_context},
    bind=bind,
    readout=readout,
    expected=expected,
    verify_inputs=verify_inputs,
    longest_input=longest_input,
    worst_case_steps=worst_case_steps,
    source_strategy="automaton_sources",
    strategy_defaults={"max_states": 8, "max_symbols": 3},
    state_graph=state_graph,
    minimise=minimise,
    to_dot=to_dot,
)
