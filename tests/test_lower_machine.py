"""Machine lowering, both placements: compiled runs equal the reference interpreter.

Weights placement holds the rule table in V and Q (one token a step); context placement is
the bounded universal machine, which reads the table from its prompt (two tokens a step).
Every compiled run must agree with `interpret.run_machine` on output, status, final state
and steps.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lat.api import run, run_report, shipped_program
from lat.compiler import compile_source
from lat.compiler.bind import bind_program
from lat.compiler.interpret import run_machine
from lat.compiler.ir import CheckedMachine
from lat.learner import learn
from lat.runtime.errors import InputError
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel
from lat.testing import machine_inputs, machine_sources

PLACEMENTS = ("weights", "context")
KEYS = ("output", "status", "final_state", "steps")


def expected(machine: CheckedMachine, word: tuple[str, ...]) -> dict[str, object]:
    truth = run_machine(machine, word)
    return {key: getattr(truth, key) for key in KEYS}


def reports(model: CompiledModel, words: list[tuple[str, ...]]) -> list[dict[str, object]]:
    """One batched rollout, read as `lat run --json` objects restricted to KEYS."""
    results = rollout(model, words)
    assert [r.input for r in results] == words
    return [{key: run_report(model, r)[key] for key in KEYS} for r in results]


def check_against_interpreter(model: CompiledModel, machine: CheckedMachine,
                              words: list[tuple[str, ...]], placement: str) -> None:
    for word, got in zip(words, reports(model, words), strict=True):
        want = expected(machine, word)
        assert got == want, (placement, word)


def _property(text: str, data: st.DataObject) -> None:
    compilations = {p: compile_source(text, "random.lat", placement=p) for p in PLACEMENTS}
    machine = compilations["weights"].declaration
    words = data.draw(st.lists(machine_inputs(machine.tape, machine.blank, machine.tape_cells),
                               min_size=1, max_size=4), label="inputs")
    for placement, compilation in compilations.items():
        check_against_interpreter(compilation.model, machine, words, placement)


@settings(max_examples=100)
@given(machine_sources(min_states=2, max_states=8, min_symbols=2, max_symbols=4,
                       max_steps=64, max_cells=32), st.data())
def test_compiled_machines_equal_the_interpreter(text: str, data: st.DataObject) -> None:
    _property(text, data)


@pytest.mark.slow
@settings(max_examples=500)
@given(machine_sources(min_states=2, max_states=8, min_symbols=2, max_symbols=4,
                       max_steps=64, max_cells=32), st.data())
def test_compiled_machines_equal_the_interpreter_many(text: str, data: st.DataObject) -> None:
    _property(text, data)


@settings(max_examples=60)
@given(machine_sources(min_states=2, max_states=3, min_symbols=2, max_symbols=3,
                       max_steps=6, max_cells=4), st.data())
def test_small_bounds_where_limits_collide(text: str, data: st.DataObject) -> None:
    """Tiny bounds make step limit, end of tape and halting meet often."""
    _property(text, data)


# -- sizes and margin -----------------------------------------------------------------------


@settings(max_examples=40)
@given(machine_sources())
def test_weights_artifact_sizes_and_margin(text: str) -> None:
    compilation = compile_source(text, "random.lat")
    m, model = compilation.declaration, compilation.model
    states, symbols, cells = len(m.states), len(m.tape), m.tape_cells
    assert 2 <= states <= 8 and 2 <= symbols <= 4 and "_" == m.blank in m.tape
    assert 1 <= cells <= 32 and 1 <= m.max_steps <= 64 and m.halt
    assert model.heads == states + 1
    assert model.d == cells + cells * symbols + states * cells + 1
    # state, write, read, cell, head (cells + out), halt (no, yes)
    assert model.d_out == states + 2 * symbols + cells + (cells + 1) + 2
    assert tuple(model.Q.shape) == (states + 1, model.d, model.d)
    assert model.parameters == model.V.numel() + model.Q.numel()
    assert model.info["decode_margin"] == 1.0
    assert model.info["placement"] == "weights" and model.info["kind"] == "machine"


def test_context_executor_reports_two_tokens_per_step() -> None:
    compilation = compile_source(INCREMENT, "increment.lat", placement="context")
    executor = compilation.artifact
    assert executor.info["program"] == "<universal>"
    assert executor.interface.extra["tokens_per_step"] == 2
    assert executor.info["decode_margin"] == 1.0
    assert compilation.model.interface.program == "increment"


def test_observed_margins_are_at_least_one() -> None:
    for placement in PLACEMENTS:
        model = compile_source(INCREMENT, "increment.lat", placement=placement).model
        for result in rollout(model, [(), ("1",) * 15, ("0", "1", "1")]):
            assert result.margin >= 1.0 and result.margin_resolved


# -- each status from a hand-written machine ----------------------------------------------

INCREMENT = shipped_program("increment.lat")  # the shipped program, not a copy of it


def ones(steps: int, cells: int) -> str:
    """Writes 1 and moves right until it reads a 0, then halts."""
    return f"""
machine ones {{
  tape: 0, 1, _
  blank: _
  states: go, done
  start: go
  halt: done
  bound: steps {steps}, tape {cells}
  go 1 | _ -> 1 R go
  go 0 -> 0 S done
}}
"""


STATUS_CASES = [
    # (source, input, output, status, final_state, steps)
    (INCREMENT, "1101", "0011", "halted", "done", 3),
    (INCREMENT, "", "1", "halted", "done", 1),
    (INCREMENT, "1" * 16, "0" * 15 + "1", "out_of_tape", "carry", 15),
    (ones(10, 5), "110", "110", "halted", "done", 3),
    (ones(10, 3), "", "11", "out_of_tape", "go", 2),
    (ones(2, 5), "", "11", "step_limit", "go", 2),
    (ones(3, 3), "1", "11", "out_of_tape", "go", 2),
]


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize(("source", "word", "output", "status", "final_state", "steps"),
                         STATUS_CASES, ids=[f"{i}-{case[3]}" for i, case in
                                            enumerate(STATUS_CASES)])
def test_every_status(placement: str, source: str, word: str, output: str, status: str,
                      final_state: str, steps: int) -> None:
    compilation = compile_source(source, "m.lat", placement=placement)
    report = run(compilation.model, word)
    want = {"output": output, "status": status, "final_state": final_state, "steps": steps}
    assert expected(compilation.declaration, tuple(word)) == want
    assert {key: report[key] for key in KEYS} == want


def test_a_start_state_that_halts_takes_no_step() -> None:
    source = ones(5, 4).replace("halt: done", "halt: go, done").replace(
        "  go 1 | _ -> 1 R go\n  go 0 -> 0 S done\n", "")
    for placement in PLACEMENTS:
        report = run(compile_source(source, "m.lat", placement=placement).model, "10")
        assert (report["output"], report["status"], report["steps"]) == ("10", "halted", 0)


def test_moving_left_on_cell_zero_stays() -> None:
    source = """
machine left {
  tape: a, b, _
  blank: _
  states: s, t, h
  start: s
  halt: h
  bound: steps 10, tape 3
  s * -> b L t
  t * -> a S h
}
"""
    for placement in PLACEMENTS:
        compilation = compile_source(source, "left.lat", placement=placement)
        report = run(compilation.model, "bb")
        assert {k: report[k] for k in KEYS} == expected(compilation.declaration, ("b", "b"))
        assert report["output"] == "ab"


def test_multi_character_symbols_are_joined_with_spaces() -> None:
    source = """
machine words {
  tape: ab, c, _
  blank: _
  states: s, h
  start: s
  halt: h
  bound: steps 10, tape 4
  s ab -> c R s
  s c -> ab R s
  s _ -> c S h
}
"""
    for placement in PLACEMENTS:
        compilation = compile_source(source, "words.lat", placement=placement)
        report = run(compilation.model, ("ab", "c"))
        assert report["output"] == "c ab c" == run_machine(compilation.declaration,
                                                            ("ab", "c")).output


def test_step_limit_beats_out_of_tape_in_context_placement() -> None:
    compilation = compile_source(ones(2, 3), "ones.lat", placement="context")
    report = run(compilation.model, "")
    assert report["status"] == "step_limit" == run_machine(compilation.declaration, ()).status


def test_step_limit_beats_out_of_tape() -> None:
    # 2 steps take the head from cell 0 to cell 2 = the last cell; the bound stops the run
    # there. The move that would leave the tape is never attempted: status step_limit.
    compilation = compile_source(ones(2, 3), "ones.lat")
    assert run_machine(compilation.declaration, ()).status == "step_limit"
    assert run(compilation.model, "")["status"] == "step_limit"


# -- the universal executor runs another machine of the same sizes ------------------------

OTHER = """
machine other {
  tape: 1, 0, _
  blank: _
  states: done, flip
  start: flip
  halt: done
  bound: steps 40, tape 16
  flip 0 -> 1 R flip
  flip 1 -> 0 R flip
  flip _ -> _ L done
}
"""


def test_executor_of_one_machine_runs_another() -> None:
    executor = compile_source(INCREMENT, "increment.lat", placement="context").artifact
    other = compile_source(OTHER, "other.lat").declaration
    bound = bind_program(executor, other)
    assert bound.V is executor.V and bound.Q is executor.Q  # the weights are untouched
    words = [(), ("1",), ("0", "1", "1", "0"), ("1",) * 16, ("0", "1") * 7]
    check_against_interpreter(bound, other, words, "context")
    assert run(bound, "0110")["output"] == "1001"


@settings(max_examples=30)
@given(machine_sources(min_states=2, max_states=6, min_symbols=2, max_symbols=4,
                       max_steps=40, max_cells=12), st.data())
def test_executor_runs_random_machines_no_larger_than_it(text: str, data: st.DataObject
                                                        ) -> None:
    executor = compile_source(text, "a.lat", placement="context").artifact
    first = compile_source(text, "a.lat").declaration
    other_text = data.draw(machine_sources(
        min_states=2, max_states=len(first.states), min_symbols=2,
        max_symbols=len(first.tape), max_steps=40, max_cells=12), label="other")
    # same tape length: the universal machine is compiled for exactly that many cells
    other_text = re.sub(r"(bound: steps \d+, tape )\d+", rf"\g<1>{first.tape_cells}",
                        other_text)
    other = compile_source(other_text, "b.lat").declaration
    bound = bind_program(executor, other)
    words = data.draw(st.lists(machine_inputs(other.tape, other.blank, other.tape_cells),
                               min_size=1, max_size=4), label="inputs")
    check_against_interpreter(bound, other, words, "context")


# -- inputs outside the domain ------------------------------------------------------------


def one_line_input_error(model: CompiledModel, word: tuple[str, ...]) -> str:
    with pytest.raises(InputError) as caught:
        run(model, word)
    with pytest.raises(InputError):
        rollout(model, [("1",), word])
    message = str(caught.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_bad_inputs_raise_input_error(placement: str) -> None:
    compilation = compile_source(INCREMENT, "increment.lat", placement=placement)
    model, machine = compilation.model, compilation.declaration
    bad = {
        "unknown": ("1", "2"),
        "too_long": ("1",) * 17,
        "blank": ("1", "_", "0"),
    }
    for name, word in bad.items():
        message = one_line_input_error(model, word)
        with pytest.raises(InputError):
            run_machine(machine, word)
        if name == "unknown":
            assert "'2'" in message
        if name == "too_long":
            assert "17" in message and "16" in message
        if name == "blank":
            assert "blank" in message
    with pytest.raises(InputError):
        run(model, "12")  # a command-line string is split and checked the same way


def test_bound_executor_refuses_symbols_of_its_unused_slots() -> None:
    executor = compile_source(INCREMENT, "increment.lat", placement="context").artifact
    smaller = compile_source(ones(10, 16).replace("tape: 0, 1, _", "tape: 1, 0, _"),
                             "ones.lat").declaration
    narrow = compile_source("""
machine narrow {
  tape: x, _
  blank: _
  states: s, h
  start: s
  halt: h
  bound: steps 5, tape 16
  s * -> x R h
}
""", "narrow.lat").declaration
    assert run(bind_program(executor, smaller), "110")["status"] == "halted"
    bound = bind_program(executor, narrow)
    assert run(bound, "x")["output"] == "x"
    for word in [("<g1>",), ("<g2>",), ("1",), ("0",)]:
        one_line_input_error(bound, word)


# -- learned equals compiled --------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=2)
@given(machine_sources(min_states=2, max_states=3, min_symbols=2, max_symbols=3,
                       max_steps=12, max_cells=6))
def test_learned_machine_equals_compiled(text: str) -> None:
    model = compile_source(text, "small.lat").model
    result = learn(model, samples=200, max_len=6, design_rounds=1)
    assert result.equivalent, result.mismatches
    assert result.certificate.identifiable
    assert result.train_max_abs_error < 1e-6
