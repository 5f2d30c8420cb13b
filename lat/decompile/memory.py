"""Memories: every key of the interface's vocabulary looked up, and one key outside it when
unknown keys map to a default; comparison by table equality."""

from __future__ import annotations

import numpy as np

from lat.compiler import ast
from lat.compiler.ir import CheckedMemory
from lat.compiler.printer import format_program
from lat.decompile.readings import Book, Budget, answers, as_symbol, finish, lat_names, runs
from lat.decompile.report import Decompilation
from lat.runtime.model import CompiledModel


def read_memory(model: CompiledModel, budget: Budget,
                rng: np.random.Generator) -> Decompilation:
    """Every key, and one outside the table when there is a default: the budget and the
    generator do not apply (the domain is finite and read whole)."""
    interface = model.interface
    keys = list(interface.input_alphabet)
    other = interface.input_other
    words = [(k,) for k in keys]
    if other is not None:
        probe = other
        while probe in keys:
            probe = "<" + probe + ">"
        words.append((probe,))
    book = Book()
    field_name = interface.result_field
    for result in runs(model, words):
        margin, resolved = answers(model, result)
        key = result.input[0]
        slot = ("default",) if other is not None and key not in keys else ("key", key)
        book.add(slot, result.value(field_name), float(margin[-1]), bool(resolved[-1]),
                 {"input": list(result.input)})
    program = None
    if all(len(e.values) == 1 and e.unresolved == 0 for e in book.entries.values()):
        def value(slot: tuple) -> str:
            return next(iter(book.entries[slot].values))

        default = value(("default",)) if other is not None else None
        memory = ast.Memory(
            name=ast.Name(lat_names([interface.program], "decompiled")[interface.program]),
            entries=tuple(ast.Entry(as_symbol(k), as_symbol(value(("key", k)))) for k in keys),
            default=None if default is None else as_symbol(default))
        program = format_program(ast.Program((memory,)))
    method = (f"method: every key of the interface's vocabulary ({len(keys)})"
              + (" and one key outside it (the default)" if other is not None else "")
              + " looked up through the runtime")
    report = finish("memory", book,
                    lambda key: "default" if key == ("default",) else key[1],
                    lambda value: value, program, method, len(words), [], {})
    report.scope = "exhaustive"
    return report


def compare_memories(report: Decompilation, model: CompiledModel, a: CheckedMemory,
                     b: CheckedMemory) -> None:
    report.comparison = "table equality (every key of either table, and the default)"
    differences = []
    for key in dict.fromkeys([*a.keys, *b.keys]):
        mine, theirs = a.table.get(key, a.default), b.table.get(key, b.default)
        if mine != theirs:
            differences.append({"entry": key, "model": mine, "reference": theirs})
    if a.default != b.default:
        fresh = "<another key>"
        while fresh in a.table or fresh in b.table:
            fresh = "<" + fresh + ">"
        differences.append({"entry": "default", "model": a.default, "reference": b.default,
                            "key": fresh})
    report.differences = differences
    report.equivalent_to_reference = not differences
    if differences:
        first = differences[0]
        report.distinguishing_input = [first.get("key", first["entry"])]
