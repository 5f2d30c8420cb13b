"""The compile pipeline: random automata as .lat text → parse → compile → run == interpreter."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lat.compiler import LatError, compile_source
from lat.compiler.interpret import run_automaton
from lat.runtime.execute import rollout
from lat.testing import automaton_sources, words


@pytest.mark.slow
@settings(max_examples=40)
@given(source=automaton_sources(min_states=2, max_states=30, min_symbols=2, max_symbols=5),
       data=st.data())
def test_compiled_random_dfa_equals_interpreter(source, data):
    compilation = compile_source(source, "random.lat")
    automaton, model = compilation.declaration, compilation.model
    inputs = data.draw(st.lists(words(automaton.alphabet, 0, 200), min_size=1, max_size=8))
    for word, result in zip(inputs, rollout(model, inputs), strict=True):
        truth = run_automaton(automaton, word)
        assert result.decoded["state"] == truth.trace
        assert result.value("accept") == truth.output
        assert result.steps == truth.steps
        assert result.margin >= 1.0 and result.margin_resolved


def test_minimise_compiles_the_same_language():
    source = """
    automaton redundant {
      alphabet: a, b
      states: p, q, r, dead
      start: p
      accept: q, r
      p a -> q
      p b -> r
      q * -> q
      r * -> r
      dead * -> dead
    }
    """
    full = compile_source(source, "r.lat")
    small = compile_source(source, "r.lat", minimise=True)
    assert len(small.declaration.states) == 2 < len(full.declaration.states)
    assert small.model.d < full.model.d
    inputs = [tuple(w) for w in ("", "a", "b", "ab", "ba", "abba", "bbbb")]
    assert [r.value("accept") for r in rollout(full.model, inputs)] == [
        r.value("accept") for r in rollout(small.model, inputs)
    ]


def test_several_declarations_need_a_name():
    source = """
    automaton one { alphabet: a states: s start: s s a -> s }
    automaton two { alphabet: a states: s start: s s a -> s }
    """
    with pytest.raises(LatError, match="--name"):
        compile_source(source, "two.lat")
    assert compile_source(source, "two.lat", name="two").model.interface.program == "two"


def test_minimise_is_for_automata_only():
    with pytest.raises(LatError, match="automata only") as caught:
        compile_source("memory m {\n  a -> b\n}\n", "m.lat", minimise=True)
    assert str(caught.value).startswith("m.lat:1:1:")


def test_context_compile_saves_the_universal_executor():
    source = "automaton p { alphabet: 0, 1 states: e, o start: e accept: e " \
             "e 0 -> e e 1 -> o o 0 -> o o 1 -> e }"
    compilation = compile_source(source, "p.lat", placement="context")
    assert compilation.artifact.interface.program == "<universal>"
    assert compilation.artifact.interface.prompt == ({"bos": ()},)
    assert compilation.model.interface.program == "p"
    assert len(compilation.model.interface.prompt) == 1 + 4 + 1  # bos entry, table, query
    assert torch.equal(compilation.model.V, compilation.artifact.V)  # same weights
