"""The registry of program kinds: one home per kind, found by one lookup, and no dispatch on
kinds anywhere else in the package."""

from __future__ import annotations

import ast as python_ast
import dataclasses
import typing
from pathlib import Path

import pytest

from lat.api import run_report, shipped_program, worst_case_steps
from lat.compiler import ast, compile_source
from lat.compiler.check import check_program
from lat.compiler.ir import Checked
from lat.compiler.kinds import KINDS, UnknownKind, kind_named, kind_names, kind_of
from lat.compiler.kinds.machine import MachineRecord
from lat.compiler.parse import parse_program
from lat.compiler.printer import format_program
from lat.runtime.errors import ArtifactError
from lat.runtime.execute import rollout
from lat.runtime.interface import Interface

PACKAGE = Path(__file__).resolve().parent.parent / "lat"
KINDS_DIR = PACKAGE / "compiler" / "kinds"

#: shipped programs, a few of each kind (the machines with the smallest bounds)
SHIPPED = ["parity.lat", "div3.lat", "dyck1.lat", "capitals.lat", "increment.lat",
           "busy.lat", "palindrome.lat"]


# -- the registry --------------------------------------------------------------------------


def test_the_registry_covers_every_declaration_and_checked_form():
    assert kind_names() == ("automaton", "memory", "machine")
    assert {kind.syntax for kind in KINDS} == set(typing.get_args(ast.Declaration))
    assert {kind.checked for kind in KINDS} == set(typing.get_args(Checked))
    for kind in KINDS:
        assert kind_named(kind.name) is kind
        assert set(kind.lower) == {"weights", "context"}


def test_every_kind_has_a_shipped_program_among_those_tested_here():
    tested = {kind_of(declaration).name for filename in SHIPPED
              for declaration in parse_program(shipped_program(filename)).declarations}
    assert tested == set(kind_names())


def test_every_shipped_declaration_finds_its_kind_by_node_checked_form_and_label():
    for filename in SHIPPED:
        program = parse_program(shipped_program(filename), filename)
        for node, checked in zip(program.declarations, check_program(program).declarations,
                                 strict=True):
            kind = kind_of(node)
            assert kind_of(checked) is kind
            assert isinstance(node, kind.syntax) and isinstance(checked, kind.checked)
            assert compile_source(shipped_program(filename)).model.interface.kind == kind.name


def test_an_unknown_kind_label_is_refused_in_one_line():
    with pytest.raises(UnknownKind, match=r"unknown program kind 'pushdown': lat knows "
                                          r"automaton, memory, machine"):
        kind_named("pushdown")
    assert issubclass(UnknownKind, ArtifactError)  # the CLI's one-line artifact refusal


def test_an_artifact_of_an_unknown_kind_fails_loudly_not_as_another_kind():
    model = compile_source(shipped_program("increment.lat")).model
    foreign = dataclasses.replace(model, interface=dataclasses.replace(model.interface,
                                                                       kind="pushdown"))
    with pytest.raises(UnknownKind, match="pushdown"):
        worst_case_steps(foreign, 3)
    result = rollout(model, [("1",)])[0]
    with pytest.raises(UnknownKind, match="pushdown"):
        run_report(foreign, result)


def test_an_object_that_is_no_declaration_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="not a declaration of a known program kind: str"):
        kind_of("automaton")
    with pytest.raises(TypeError, match="Program"):
        kind_of(ast.Program(()))


# -- each kind's pieces, on shipped programs -------------------------------------------------


@pytest.mark.parametrize("filename", SHIPPED)
def test_print_parse_check_gives_the_same_checked_program(filename):
    text = shipped_program(filename)
    checked = check_program(parse_program(text, filename)).declarations
    printed = format_program(parse_program(text, filename))
    again = check_program(parse_program(printed, "printed")).declarations
    assert again == checked
    for declaration in checked:  # the kind's own printer writes the declaration's lines
        lines = kind_of(declaration).format(declaration.source)
        assert lines[0].startswith(f"{kind_of(declaration).name} {declaration.name} {{")


@pytest.mark.parametrize("filename", SHIPPED)
@pytest.mark.parametrize("placement", ["weights", "context"])
def test_the_interpreter_agrees_with_the_compiled_model(filename, placement):
    compilation = compile_source(shipped_program(filename), filename, placement=placement)
    declaration = compilation.declaration
    kind = kind_of(declaration)
    words, _ = kind.verify_inputs(declaration, 3, 12, 0)
    assert words and max(map(len, words)) <= kind.longest_input(declaration, 3)
    for word, result in zip(words, rollout(compilation.model, words), strict=True):
        report = run_report(compilation.model, result)
        expected = kind.expected(declaration, word)
        assert {key: report[key] for key in expected} == expected, word
        assert kind.interpret(declaration, word).output == report["output"]
        assert report["steps"] <= worst_case_steps(compilation.model, len(word))


def test_estimates_are_the_lowered_sizes_for_every_kind_and_placement():
    for filename in ("parity.lat", "capitals.lat", "busy.lat"):
        for placement in ("weights", "context"):
            compilation = compile_source(shipped_program(filename), placement=placement)
            sizes = kind_of(compilation.declaration).estimate(compilation.declaration,
                                                              placement, None)
            H, d_out, d = compilation.artifact.V.shape
            assert (sizes.heads, sizes.d, sizes.d_out) == (H, d, d_out)


def test_a_big_programs_estimate_is_its_lowerings_own_sparse_or_dense():
    from lat.compiler.kinds.base import ALWAYS_DENSE_BYTES
    from lat.compiler.lower import automaton as lower_automaton
    from lat.compiler.lower import memory as lower_memory

    # the shortcut that keeps `lat check` light is exact: nothing below it is sparse
    assert lower_automaton.SPARSE_LOWERING_BYTES >= ALWAYS_DENSE_BYTES
    assert lower_memory.SPARSE_LOWERING_BYTES >= ALWAYS_DENSE_BYTES
    keys = 6000
    table = "\n".join(f"  k{i} -> v{i % 7}" for i in range(keys))
    memory = check_program(parse_program(f"memory big {{\n{table}\n}}\n")).get()
    for placement in ("weights", "context"):
        sizes = kind_of(memory).estimate(memory, placement, None)
        assert sizes == lower_memory.lowering_estimate(keys, 7, placement)
    assert kind_of(memory).estimate(memory, "weights", None).peak_bytes < 4 * keys * keys
    rules = "\n".join(f"  q{i} * -> q{(i + 1) % 600}" for i in range(600))
    states = ", ".join(f"q{i}" for i in range(600))
    text = (f"automaton ring {{\n  alphabet: a, b, c\n  states: {states}\n  start: q0\n"
            f"{rules}\n}}\n")
    ring = check_program(parse_program(text)).get()
    for placement in ("weights", "context"):
        assert kind_of(ring).estimate(ring, placement, None) == \
            lower_automaton.lowering_estimate(600, 3, placement)


# -- the machine's typed readout -------------------------------------------------------------


def test_the_machine_record_is_what_the_lowering_writes_under_the_artifact_keys():
    text = shipped_program("busy.lat")
    weights = compile_source(text).model.interface
    assert list(weights.extra) == ["blank", "start", "tape", "steps"]  # the artifact format
    record = MachineRecord.read(weights)
    declaration = check_program(parse_program(text)).get()
    assert record == MachineRecord(blank=declaration.blank, start=declaration.start,
                                   tape=declaration.tape, steps=declaration.max_steps)
    context = compile_source(text, placement="context").model.interface
    assert list(context.extra) == ["placement", "states", "symbols", "cells",
                                   "tokens_per_step", "blank", "start", "tape", "steps"]
    assert MachineRecord.read(context) == dataclasses.replace(record, tokens_per_step=2)


def test_an_artifact_written_before_the_record_reads_back_the_same():
    interface = compile_source(shipped_program("increment.lat")).model.interface
    raw = interface.to_json()
    reread = Interface.from_json(raw)
    assert MachineRecord.read(reread) == MachineRecord.read(interface)
    assert MachineRecord.read(reread).to_extra() == dict(reread.extra)


def test_an_unbound_machine_executor_has_no_record_and_no_readout():
    executor = compile_source(shipped_program("busy.lat"), placement="context").executor
    assert MachineRecord.read(executor.interface) is None
    with pytest.raises(ValueError, match="bound to no machine"):
        kind_named("machine").readout(executor.interface, None)


# -- no dispatch on kinds outside the registry ------------------------------------------------

KIND_CLASSES = {node.__name__ for kind in KINDS for node in (kind.syntax, kind.checked)}

def kind_dispatches(source: str) -> list[str]:
    """Where `source` branches on a program's kind: a comparison with a kind's name, an
    isinstance/issubclass check or a type-keyed table on a kind's AST or checked class."""

    def names_in(node: python_ast.AST) -> set[str]:
        found = set()
        for sub in python_ast.walk(node):
            if isinstance(sub, python_ast.Name):
                found.add(sub.id)
            elif isinstance(sub, python_ast.Attribute):
                found.add(sub.attr)
        return found

    def kind_strings(node: python_ast.AST) -> bool:
        return any(isinstance(sub, python_ast.Constant) and sub.value in kind_names()
                   for sub in python_ast.walk(node))

    hits = []
    for node in python_ast.walk(python_ast.parse(source)):
        why = None
        if isinstance(node, python_ast.Compare):
            if any(kind_strings(side) for side in (node.left, *node.comparators)):
                why = "compares with a kind's name"
        elif (isinstance(node, python_ast.Call) and isinstance(node.func, python_ast.Name)
              and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2):
            if names_in(node.args[1]) & KIND_CLASSES:
                why = "isinstance on a kind's class"
        elif isinstance(node, python_ast.Dict):
            if any(key is not None and names_in(key) & KIND_CLASSES for key in node.keys):
                why = "a table keyed by a kind's class"
        elif isinstance(node, python_ast.MatchClass) and names_in(node.cls) & KIND_CLASSES:
            why = "a match on a kind's class"
        if why is not None:
            hits.append(f"line {node.lineno}: {why}")
    return hits


@pytest.mark.parametrize("snippet", [
    'if interface.kind == "memory":\n    pass',
    'if "machine" != model.interface.kind:\n    pass',
    'x = kind in ("automaton", "memory")',
    'if isinstance(declaration, CheckedAutomaton):\n    pass',
    'if isinstance(node, (ast.Memory, ast.Machine)):\n    pass',
    'binders = {CheckedMachine: bind_machine}',
])
def test_the_dispatch_detector_sees_each_way_of_branching_on_a_kind(snippet):
    assert kind_dispatches(snippet)


@pytest.mark.parametrize("snippet", [
    'if field.kind == "embedding":\n    pass',  # a token field's kind, not a program's
    'if embedding.kind != "onehot":\n    pass',
    'result["machine"] = machine_info(target)',
    'kind = kind_named(interface.kind)\nif kind.cap_steps is None:\n    pass',
    'if isinstance(symbol, ast.Symbol):\n    pass',
])
def test_the_dispatch_detector_leaves_other_code_alone(snippet):
    assert not kind_dispatches(snippet)


def test_no_module_outside_the_registry_dispatches_on_kinds():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if KINDS_DIR not in path.parents:
            offenders += [f"lat/{path.relative_to(PACKAGE)} {hit}"
                          for hit in kind_dispatches(path.read_text(encoding="utf-8"))]
    assert not offenders, "ask lat.compiler.kinds instead:\n" + "\n".join(offenders)
