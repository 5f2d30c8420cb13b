"""lat.decompile: weights → `.lat`, read off the model's behaviour through its runtime.

Round trips (compile → decompile ≡ source) for shipped programs in both placements and for
random automata, memories and machines (Hypothesis); a relearned model; an SGD-trained
one; a model with one V entry changed (the changed entry and a distinguishing input are
reported); a history-dependent model (not decompilable, with the disagreeing readings);
and the command line.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from lat import cli
from lat.api import shipped_program
from lat.compiler import compile_source
from lat.compiler.check import check_program
from lat.compiler.errors import LatError
from lat.compiler.interpret import run as interpret
from lat.compiler.parse import parse_program
from lat.decompile import decompile
from lat.runtime.device import single_thread
from lat.runtime.errors import InputError
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel
from lat.testing import automaton_sources, machine_sources, memory_sources

FAST = {"samples": 24, "max_len": 12, "inputs": 256}
# Hypothesis budget per test: the whole module stays within ~30 s at the ci profile.
SMALL = settings(max_examples=12, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SHIPPED = [
    ("parity.lat", "weights"), ("div3.lat", "weights"), ("mod5x5.lat", "weights"),
    ("counter2.lat", "weights"), ("dyck1.lat", "weights"), ("shift2.lat", "weights"),
    ("capitals.lat", "weights"), ("increment.lat", "weights"), ("busy.lat", "weights"),
    ("palindrome.lat", "weights"),
    ("div3.lat", "context"), ("abab_star.lat", "context"), ("capitals.lat", "context"),
    ("increment.lat", "context"),
]


def _compile(text: str, **options):
    """Compile a drawn source; one the checker refuses is not an example for these tests."""
    try:
        return compile_source(text, **options)
    except LatError:
        reject()


def _checks(text: str):
    """The decompiled text parses and checks (what `lat check` does)."""
    return check_program(parse_program(text, "<decompiled>")).declarations[0]


@pytest.mark.parametrize(("name", "placement"), SHIPPED)
def test_shipped_programs_round_trip(name, placement):
    compilation = compile_source(shipped_program(name), name, placement=placement)
    report = decompile(compilation.model, against=compilation.declaration, **FAST)
    assert report.consistent, report.inconsistent[:3]
    assert report.equivalent_to_reference, (report.comparison, report.differences)
    assert report.min_margin >= 1.0 - 1e-6
    assert report.program.startswith("# decompiled by `lat decompile`")
    assert type(_checks(report.program)) is type(compilation.declaration)
    data = report.to_json()
    for key in ("kind", "program", "entries", "consistent", "min_margin", "inconsistent",
                "equivalent_to_reference", "distinguishing_input", "renaming"):
        assert key in data
    json.dumps(data)


def test_length_bound_from_the_weights():
    compiled = compile_source(shipped_program("div3.lat")).model
    report = decompile(compiled, **FAST)
    # margin c ≥ 1 against fp32's 64 ulps of an output of size ≤ t: t < 2^17
    assert report.proven_length == 2**17 - 2
    assert "every word of length ≤ 131,070" in report.program
    assert all(row["proven_up_to"] == 2**17 - 2 for row in report.entries
               if row["key"][0] != "accept" and row["key"] != ["bos"])
    # cross terms of 1/1000 between every two tokens: still the same table on every
    # word read, but proven only up to a shorter length
    weaker = decompile(dataclasses.replace(compiled, Q=compiled.Q + 1e-3 * (
        torch.ones_like(compiled.Q) - torch.eye(compiled.d))), **FAST)
    assert weaker.consistent
    assert 0 < weaker.proven_length < 2**17 - 2
    context = compile_source(shipped_program("div3.lat"), placement="context").model
    assert decompile(context, **FAST).proven_length is None


def test_deep_automaton_is_explored_to_the_end():
    """A chain of 70 states: the exploration takes as many layers as the chain is long."""
    names = [f"q{i}" for i in range(70)]
    text = ("automaton chain {\n  alphabet: a, b\n  states: " + ", ".join(names)
            + "\n  start: q0\n  accept: q69\n"
            + "".join(f"  {q} a -> {names[min(i + 1, 69)]}\n  {q} b -> {q}\n"
                      for i, q in enumerate(names)) + "}\n")
    compilation = compile_source(text)
    report = decompile(compilation.model, against=compilation.declaration, samples=4,
                       max_len=8)
    assert report.consistent and report.equivalent_to_reference
    assert len(report.declaration.states) == 70


def test_automaton_renaming_is_reported_for_isomorphic_programs():
    text = shipped_program("parity.lat")
    model = compile_source(text).model
    renamed = text.replace("even", "zero").replace("odd", "one")
    reference = check_program(parse_program(renamed)).get()
    report = decompile(model, against=reference, **FAST)
    assert report.equivalent_to_reference
    assert report.renaming == {"even": "zero", "odd": "one"}


@SMALL
@given(automaton_sources(max_states=12, max_symbols=4))
def test_random_automata_round_trip(text):
    compilation = _compile(text)
    report = decompile(compilation.model, against=compilation.declaration, **FAST)
    assert report.consistent
    assert report.equivalent_to_reference, report.comparison
    assert report.renaming is not None
    _checks(report.program)


@SMALL
@given(memory_sources(max_pairs=20))
def test_random_memories_round_trip(text):
    compilation = _compile(text)
    report = decompile(compilation.model, against=compilation.declaration, **FAST)
    assert report.consistent
    assert report.equivalent_to_reference, report.differences
    decompiled = _checks(report.program)
    memory = compilation.declaration
    assert dict(decompiled.table) == dict(memory.table)
    assert decompiled.default == memory.default


@SMALL
@given(machine_sources(max_states=4, max_symbols=3, max_steps=12, max_cells=5),
       st.sampled_from(["weights", "context"]))
def test_random_machines_round_trip(text, placement):
    compilation = _compile(text, placement=placement)
    report = decompile(compilation.model, against=compilation.declaration, **FAST)
    assert report.consistent, report.inconsistent[:2]
    assert report.equivalent_to_reference, report.differences
    decompiled = _checks(report.program)
    # Equal tables on the reachable part: the same run on every input up to the tape.
    machine = compilation.declaration
    alphabet = [s for s in machine.tape if s != machine.blank]
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(0, machine.tape_cells + 1))
        word = tuple(alphabet[i] for i in rng.integers(0, len(alphabet), n)) if alphabet else ()
        mine, theirs = interpret(decompiled, word), interpret(machine, word)
        assert (mine.output, mine.status, mine.steps, mine.tape) == (
            theirs.output, theirs.status, theirs.steps, theirs.tape)


def test_relearned_model_decompiles_to_an_equivalent_program():
    from lat.learner import learn

    compilation = compile_source(shipped_program("div3.lat"))
    learned = learn(compilation.model, samples=120, max_len=16).model
    assert learned.info.get("origin") != "compiled"
    report = decompile(learned, against=compilation.declaration, **FAST)
    assert report.consistent
    assert report.equivalent_to_reference


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(automaton_sources(max_states=5, max_symbols=3))
def test_random_automata_relearned_round_trip(text):
    """compile → learn (Algorithm 1 with its certificate) → decompile ≡ the source."""
    from lat.learner import learn

    compilation = _compile(text)
    result = learn(compilation.model, samples=80, max_len=10, domain_samples=300)
    report = decompile(result.model, against=compilation.declaration, **FAST)
    if result.equivalent and result.certificate.identifiable:
        assert report.consistent
        assert report.equivalent_to_reference, report.comparison
    elif report.consistent and not report.equivalent_to_reference:
        assert report.distinguishing_input is not None


def test_sgd_trained_model_is_decompiled_or_refused_with_reasons():
    from lat.learner.sgd import train_sgd
    from lat.learner.traces import record_traces, sample_words

    compilation = compile_source(shipped_program("parity.lat"))
    words = sample_words(compilation.model.interface, 24, 8, np.random.default_rng(0))
    with single_thread(True):  # tiny matrices: two threads on a busy machine cost 50×
        trained = train_sgd(record_traces(compilation.model, words), heads=1, steps=30,
                            lr=3e-2, batch_size=8, eval_every=30)
    model = CompiledModel(V=torch.from_numpy(trained.V), Q=torch.from_numpy(trained.Q),
                          interface=compilation.model.interface, info={"origin": "sgd"})
    report = decompile(model, against=compilation.declaration, **FAST)
    if report.consistent:
        _checks(report.program)
        assert report.equivalent_to_reference is not None
    else:
        assert report.program is None
        assert report.inconsistent
        assert all(entry["why"] and entry["seen"] for entry in report.inconsistent)


def _retarget(model: CompiledModel, state: str, symbol: str, target: str) -> CompiledModel:
    """The compiled automaton with V's column for (state, symbol) sent to `target`."""
    interface = model.interface
    column = (interface.token_offset("state_symbol")
              + interface.token_field("state_symbol").index((state, symbol)))
    states = interface.output_field("state").values
    verdicts = interface.output_field("accept").values
    accept = next(v for (q, _), v in _verdicts(model).items() if q == target)
    V = model.V.clone()
    V[0, :, column] = 0.0
    V[0, states.index(target), column] = 1.0
    V[0, len(states) + verdicts.index(accept), column] = 1.0
    return dataclasses.replace(model, V=V)


def _verdicts(model: CompiledModel) -> dict[tuple[str, str], str]:
    """(state, its verdict) pairs, read off a compiled automaton's V."""
    report = decompile(model, **FAST)
    return {(e["key"][1], "accept"): e["value"] for e in report.entries
            if e["key"][0] == "accept"}


def test_one_changed_v_entry_is_reported_with_a_distinguishing_input():
    compilation = compile_source(shipped_program("div3.lat"))
    changed = _retarget(compilation.model, "r1", "1", "r2")  # was r1 1 -> r0
    report = decompile(changed, against=compilation.declaration, **FAST)
    assert report.consistent
    assert report.equivalent_to_reference is False
    assert {"entry": "r1 1", "model": "r2", "reference": "r0"} in report.differences
    word = report.distinguishing_input
    assert word is not None
    model_says = rollout(changed, [tuple(word)])[0].value("accept")
    assert model_says != interpret(compilation.declaration, tuple(word)).output
    # a shortest one: no shorter word tells them apart
    for n in range(len(word)):
        for shorter in np.ndindex(*(2,) * n):
            w = tuple("01"[i] for i in shorter)
            assert (rollout(changed, [w])[0].value("accept")
                    == interpret(compilation.declaration, w).output)


def test_changed_machine_and_memory_entries_are_reported():
    compilation = compile_source(shipped_program("increment.lat"))
    model = compilation.model
    interface = model.interface
    write = dict(interface.output_slices())[interface.output_field("write")]
    tape = interface.output_field("write").values
    # carry 0 -> 1 S done becomes carry 0 -> 0 S done: in carry's head (0) and in the bos
    # head (a copy of the start state's); changing one of them only is history dependence.
    V = model.V.clone()
    for h in (0, V.shape[0] - 1):
        for cell in range(16):
            column = (interface.token_offset("cell_symbol")
                      + interface.token_field("cell_symbol").index((str(cell), "0")))
            V[h, write + tape.index("1"), column] = 0.0
            V[h, write + tape.index("0"), column] = 1.0
    report = decompile(dataclasses.replace(model, V=V), against=compilation.declaration,
                       **FAST)
    assert report.consistent
    assert report.equivalent_to_reference is False
    assert [d["entry"] for d in report.differences] == ["carry 0"]
    assert report.distinguishing_input is not None

    memory = compile_source(shipped_program("capitals.lat"))
    other = check_program(parse_program(
        shipped_program("capitals.lat").replace("france -> paris", "france -> lyon"))).get()
    report = decompile(memory.model, against=other)
    assert report.equivalent_to_reference is False
    assert report.differences == [{"entry": "france", "model": "paris", "reference": "lyon"}]
    assert report.distinguishing_input == ["france"]


def test_machine_that_misreads_its_tape_is_not_decompilable():
    """increment whose carry head decodes `read _` for a 1 on cell 3: the model's own tape
    (the sum of its writes) goes wrong, which no `.lat` machine does."""
    model = compile_source(shipped_program("increment.lat")).model
    interface = model.interface
    read = dict(interface.output_slices())[interface.output_field("read")]
    tape = interface.output_field("read").values
    column = (interface.token_offset("cell_symbol")
              + interface.token_field("cell_symbol").index(("3", "1")))
    V = model.V.clone()
    V[0, read + tape.index("1"), column] = 0.0
    V[0, read + tape.index("_"), column] = 1.0
    report = decompile(dataclasses.replace(model, V=V), **FAST)
    assert not report.consistent and report.program is None
    bad = {entry["entry"]: entry for entry in report.inconsistent}
    assert "no valid transition" in bad["carry 1"]["why"]
    invalid = [s for s in bad["carry 1"]["seen"] if "invalid" in s["value"]]
    assert invalid[0]["value"] == {"invalid": "reads _ where the tape holds 1"}
    assert invalid[0]["examples"][0]["input"] == ["1", "1", "1", "1"]  # the shortest


def _history_dependent() -> CompiledModel:
    """div3 with a Q entry that makes (r1, 0) read earlier (r0, 1) tokens: its output now
    depends on how often (r0, 1) came before — not a finite-state program any more."""
    model = compile_source(shipped_program("div3.lat")).model
    interface = model.interface
    pairs, offset = interface.token_field("state_symbol"), interface.token_offset("state_symbol")
    Q = model.Q.clone()
    Q[0, offset + pairs.index(("r0", "1")), offset + pairs.index(("r1", "0"))] = 3.0
    return dataclasses.replace(model, Q=Q)


def test_history_dependent_model_is_not_decompilable():
    report = decompile(_history_dependent(), **FAST)
    assert not report.consistent
    assert report.program is None
    bad = {entry["entry"]: entry for entry in report.inconsistent}
    assert "r1 0" in bad
    seen = bad["r1 0"]["seen"]
    assert len(seen) >= 2 and all(s["examples"] for s in seen)
    assert "disagree" in bad["r1 0"]["why"]


def test_universal_executor_is_refused():
    executor = compile_source(shipped_program("div3.lat"), placement="context").executor
    with pytest.raises(InputError, match="universal executor"):
        decompile(executor)


def test_cli(tmp_path, capsys):
    artifact = tmp_path / "div3.safetensors"
    compile_source(shipped_program("div3.lat")).model.save(artifact)
    reference = tmp_path / "div3.lat"
    reference.write_text(shipped_program("div3.lat"))
    target = tmp_path / "out.lat"
    assert cli.main(["decompile", str(artifact), "-o", str(target), "--against",
                     str(reference), "--samples", "16"]) == 0
    assert cli.main(["check", str(target)]) == 0
    capsys.readouterr()
    assert cli.main(["decompile", str(artifact), "--json", "--samples", "16"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "automaton" and data["consistent"] and data["program"]
    parity = tmp_path / "parity.lat"
    parity.write_text(shipped_program("parity.lat"))
    assert cli.main(["decompile", str(artifact), "--json", "--against", str(parity)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["equivalent_to_reference"] is False and data["distinguishing_input"]
    broken = tmp_path / "broken.safetensors"
    _history_dependent().save(broken)
    assert cli.main(["decompile", str(broken), "-o", str(tmp_path / "no.lat")]) == 1
    assert not (tmp_path / "no.lat").exists()
    assert "not decompilable" in capsys.readouterr().err
