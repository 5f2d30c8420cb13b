"""bind_program: a context-placement executor given a program as its prompt.

It must refuse what it cannot run (weights-placement artifacts, another program kind,
programs larger than the executor) with a one-line InputError, and an executor saved to
disk and loaded again must run different programs correctly.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from lat.api import run, run_report, shipped_program
from lat.compiler import compile_source
from lat.compiler.bind import bind_program
from lat.compiler.interpret import run_automaton, run_machine, run_memory
from lat.runtime.errors import InputError
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel

DIV3 = shipped_program("div3.lat")  # the shipped program, not a copy of it

# same sizes as div3, other names and another table: the last symbol of a word is b
ENDS_B = """
automaton ends_b {
  alphabet: a, b
  states: other, seen_b, dead
  start: other
  accept: seen_b
  other a -> other
  other b -> seen_b
  seen_b a -> other
  seen_b b -> seen_b
  dead * -> dead
}
"""

# smaller than div3: two states
PARITY = """
automaton parity {
  alphabet: 0, 1
  states: even, odd
  start: even
  accept: even
  even 0 -> even
  even 1 -> odd
  odd 0 -> odd
  odd 1 -> even
}
"""

BIG_AUTOMATON = """
automaton big {
  alphabet: 0, 1
  states: a, b, c, d
  start: a
  a * -> b
  b * -> c
  c * -> d
  d * -> a
}
"""

WIDE_AUTOMATON = """
automaton wide {
  alphabet: 0, 1, 2
  states: a, b
  start: a
  accept: b
  a * -> b
  b * -> a
}
"""

INCREMENT = """
machine increment {
  tape: 0, 1, _
  blank: _
  states: carry, done
  start: carry
  halt: done
  bound: steps 16, tape 8
  carry 1 -> 0 R carry
  carry 0 -> 1 S done
  carry _ -> 1 S done
}
"""

# same sizes as increment: flip every bit, then walk back to cell 0
FLIP = """
machine flip {
  tape: 1, 0, _
  blank: _
  states: home, flip
  start: flip
  halt: home
  bound: steps 30, tape 8
  flip 0 -> 1 R flip
  flip 1 -> 0 R flip
  flip _ -> _ L home
}
"""


def machine(name: str, states: int, symbols: int, cells: int) -> str:
    names = [f"s{i}" for i in range(states)]
    tape = [f"t{i}" for i in range(symbols - 1)] + ["_"]
    rules = "\n".join(f"  {s} * -> _ S {names[-1]}" for s in names[:-1])
    return (f"machine {name} {{\n  tape: {', '.join(tape)}\n  blank: _\n"
            f"  states: {', '.join(names)}\n  start: s0\n  halt: {names[-1]}\n"
            f"  bound: steps 4, tape {cells}\n{rules}\n}}\n")


def memory(name: str, keys: int, values: int) -> str:
    entries = "\n".join(f"  k{i} -> v{i % values}" for i in range(keys))
    return f"memory {name} {{\n{entries}\n}}\n"


def executor(source: str) -> CompiledModel:
    return compile_source(source, "executor.lat", placement="context").artifact


def declaration(source: str):
    return compile_source(source, "program.lat").declaration


def refused(model: CompiledModel, source: str) -> str:
    with pytest.raises(InputError) as caught:
        bind_program(model, declaration(source))
    message = str(caught.value)
    assert message and "\n" not in message
    return message


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [DIV3, INCREMENT, memory("m", 3, 2)],
                         ids=["automaton", "machine", "memory"])
def test_refuses_weights_placement_artifacts(source: str) -> None:
    model = compile_source(source, "weights.lat").model
    message = refused(model, source)
    assert "context" in message


@pytest.mark.parametrize(("executor_source", "program_source", "kinds"), [
    (DIV3, INCREMENT, ("automaton", "machine")),
    (DIV3, memory("m", 3, 2), ("automaton", "memory")),
    (INCREMENT, DIV3, ("machine", "automaton")),
    (memory("m", 6, 3), DIV3, ("memory", "automaton")),
    (memory("m", 6, 3), INCREMENT, ("memory", "machine")),
], ids=["automaton-machine", "automaton-memory", "machine-automaton", "memory-automaton",
        "memory-machine"])
def test_refuses_the_wrong_kind(executor_source: str, program_source: str,
                                kinds: tuple[str, str]) -> None:
    message = refused(executor(executor_source), program_source)
    assert all(kind in message for kind in kinds)


@pytest.mark.parametrize(("executor_source", "program_source"), [
    (DIV3, BIG_AUTOMATON),  # more states
    (DIV3, WIDE_AUTOMATON),  # more symbols
    (machine("m", 3, 3, 5), machine("n", 4, 3, 5)),  # more states
    (machine("m", 3, 3, 5), machine("n", 3, 4, 5)),  # more tape symbols
    (machine("m", 3, 3, 5), machine("n", 3, 3, 6)),  # a longer tape
    (machine("m", 3, 3, 5), machine("n", 3, 3, 4)),  # a shorter tape: cells are exact
    (memory("m", 6, 3), memory("n", 7, 3)),  # more keys
    (memory("m", 6, 3), memory("n", 6, 4)),  # more values
    (memory("m", 6, 3), memory("n", 6, 3).replace("}", "  default: v9\n}")),  # + other
], ids=["automaton-states", "automaton-symbols", "machine-states", "machine-symbols",
        "machine-longer-tape", "machine-shorter-tape", "memory-keys", "memory-values",
        "memory-default-slot"])
def test_refuses_programs_larger_than_the_executor(executor_source: str,
                                                   program_source: str) -> None:
    refused(executor(executor_source), program_source)


def test_smaller_programs_bind() -> None:
    bind_program(executor(DIV3), declaration(PARITY))
    bind_program(executor(machine("m", 3, 3, 5)), declaration(machine("n", 2, 2, 5)))
    bind_program(executor(memory("m", 6, 3)), declaration(memory("n", 4, 2)))


# -- saved, loaded, bound to different programs --------------------------------------------


def saved_and_loaded(source: str, path) -> CompiledModel:
    compilation = compile_source(source, "executor.lat", placement="context")
    artifact = compilation.artifact
    assert artifact.info["program"] == "<universal>"
    artifact.save(path)
    loaded = CompiledModel.load(path)
    assert torch.equal(loaded.V, artifact.V) and torch.equal(loaded.Q, artifact.Q)
    assert loaded.interface == artifact.interface
    return loaded


def all_words(alphabet, max_len: int) -> list[tuple[str, ...]]:
    return [w for n in range(max_len + 1) for w in itertools.product(alphabet, repeat=n)]


def test_saved_automaton_executor_runs_two_programs(tmp_path) -> None:
    loaded = saved_and_loaded(DIV3, tmp_path / "automata.safetensors")
    for source in (ENDS_B, PARITY):
        program = declaration(source)
        bound = bind_program(loaded, program)
        assert bound.V is loaded.V and bound.Q is loaded.Q
        assert bound.interface.program == program.name
        words = all_words(program.alphabet, 6)
        for word, result in zip(words, rollout(bound, words), strict=True):
            truth = run_automaton(program, word)
            report = run_report(bound, result)
            assert (report["output"], report["trace"], report["steps"]) == (
                truth.output, list(truth.trace), truth.steps), word
    assert run(bind_program(loaded, declaration(ENDS_B)), "aab")["output"] == "accept"
    assert run(bind_program(loaded, declaration(PARITY)), "0110")["output"] == "accept"


def test_saved_machine_executor_runs_two_programs(tmp_path) -> None:
    loaded = saved_and_loaded(INCREMENT, tmp_path / "machines.safetensors")
    for source in (FLIP, INCREMENT):
        program = declaration(source)
        bound = bind_program(loaded, program)
        alphabet = [s for s in program.tape if s != program.blank]
        words = all_words(alphabet, 5) + [("1",) * 8, ("0", "1") * 4]
        for word, result in zip(words, rollout(bound, words), strict=True):
            truth = run_machine(program, word)
            report = run_report(bound, result)
            assert {k: report[k] for k in ("output", "status", "final_state", "steps")} == {
                "output": truth.output, "status": truth.status,
                "final_state": truth.final_state, "steps": truth.steps}, word
    assert run(bind_program(loaded, declaration(FLIP)), "0110")["output"] == "1001"
    assert run(bind_program(loaded, declaration(INCREMENT)), "11")["output"] == "001"


def test_saved_memory_executor_runs_two_programs(tmp_path) -> None:
    loaded = saved_and_loaded(memory("m", 6, 3), tmp_path / "memories.safetensors")
    for source in (memory("n", 6, 3).replace("v", "w"), memory("p", 4, 2)):
        program = declaration(source)
        bound = bind_program(loaded, program)
        for key in program.keys:
            assert run(bound, key)["output"] == run_memory(program, key).output


def test_a_bound_automaton_executor_binds_again() -> None:
    # the executor runs 3 states x 2 symbols; bound to a one-symbol program, the same
    # weights must still accept a two-symbol program (machines and memories do)
    one_symbol = """
automaton unary {
  alphabet: 1
  states: a, b
  start: a
  accept: b
  a 1 -> b
  b 1 -> a
}
"""
    bound = bind_program(executor(DIV3), declaration(one_symbol))
    again = bind_program(bound, declaration(PARITY))
    assert run(again, "0110")["output"] == "accept"


def test_a_bound_machine_executor_binds_again() -> None:
    narrow = machine("n", 2, 2, 8)
    bound = bind_program(executor(INCREMENT), declaration(narrow))
    again = bind_program(bound, declaration(FLIP))
    assert run(again, "0110")["output"] == "1001"
