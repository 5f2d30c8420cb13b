"""Automaton lowering: the weights are the table, and the decode margin bound holds."""

from __future__ import annotations

import numpy as np

from lat.api import shipped_program
from lat.compiler import compile_source
from lat.compiler.check import check_program
from lat.compiler.lower.automaton import lower_automaton
from lat.compiler.parse import parse_program

DIV3 = shipped_program("div3.lat")  # the shipped program, not a copy of it


def checked(text: str):
    return check_program(parse_program(text, "t.lat")).get(None)


def test_sizes_and_single_head():
    lowered = lower_automaton(checked(DIV3))
    assert lowered.V.shape == (1, 3 + 2, 1 + 3 * 2)
    assert lowered.Q.shape == (1, 7, 7)
    assert np.array_equal(lowered.Q[0], np.eye(7))
    assert lowered.decode_margin == 1.0


def test_every_column_of_V_is_one_transition():
    automaton = checked(DIV3)
    lowered = lower_automaton(automaton)
    interface = lowered.interface
    offset = interface.token_offset("state_symbol")
    pairs = interface.token_field("state_symbol")
    for (state, symbol), target in automaton.transition_table.items():
        column = lowered.V[0, :, offset + pairs.index((state, symbol))]
        assert column[: len(automaton.states)].argmax() == automaton.states.index(target)
        assert column.sum() == 2.0  # one state entry, one verdict entry
        assert column[3 + 1] == (target in automaton.accept)


def test_compile_report_in_the_artifact_info():
    model = compile_source(DIV3, "div3.lat").model
    assert model.info["decode_margin"] == 1.0
    assert model.info["kind"] == "automaton" and model.info["origin"] == "compiled"
    assert (model.heads, model.d, model.d_out) == (1, 7, 5)
    assert model.parameters == 5 * 7 + 7 * 7
