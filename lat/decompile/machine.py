"""Machines: inputs up to the tape bound (all, or short and random ones plus a search one
edit away), the tape replayed from the model's own decoded writes, each answer position read
as the entry (state, symbol under the head); comparison by table equality on the reachable
part, with a shortest distinguishing input among those tried."""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import product

import numpy as np

from lat.compiler import ast
from lat.compiler.interpret import run as interpret
from lat.compiler.ir import CheckedMachine
from lat.compiler.printer import format_program
from lat.decompile.readings import (
    MAX_EXAMPLES,
    Book,
    Budget,
    Entry,
    answers,
    as_symbol,
    finish,
    lat_names,
    runs,
)
from lat.decompile.report import Decompilation
from lat.runtime.errors import InputError
from lat.runtime.interface import Interface
from lat.runtime.model import CompiledModel

MOVES = ("L", "S", "R")


def _machine_inputs(interface: Interface, samples: int,
                    rng: np.random.Generator) -> tuple[list[tuple[str, ...]], bool]:
    """Every input up to the tape when there are at most `samples`; else every input up to
    the longest length that keeps half the budget, and random inputs of any length."""
    alphabet = tuple(interface.input_alphabet)
    cells = int(interface.max_input_length or 0)
    k = len(alphabet)
    total = sum(k ** n for n in range(cells + 1)) if k else 1
    if total <= samples:
        return [w for n in range(cells + 1) for w in product(alphabet, repeat=n)], True
    words: list[tuple[str, ...]] = []
    for n in range(cells + 1):
        if len(words) + k ** n > samples // 2:
            break
        words.extend(product(alphabet, repeat=n))
    for n in rng.integers(0, cells + 1, size=samples - len(words)):
        words.append(tuple(alphabet[i] for i in rng.integers(0, k, size=n)))
    return list(dict.fromkeys(words)), False


def _move(cell: int, head: str, cells: int) -> frozenset[str]:
    """The moves that take the head from `cell` to `head` (L on cell 0 stays)."""
    if head == "out":
        return frozenset({"R"}) if cell == cells - 1 else frozenset()
    target = int(head)
    moves = set()
    if target == cell + 1:
        moves.add("R")
    if target == max(cell - 1, 0):
        moves.add("L")
    if target == cell:
        moves.add("S")
    return frozenset(moves)


def _machine_readings(rows: list[dict[str, str]], start: str, cells: int,
                      context: bool) -> list[tuple]:
    """One reading per transition the model decided: (answer index, current state, head
    cell, the decoding answer, the moves its outputs imply, whether it was taken).

    Weights placement: answer i executes the state decoded at i-1 (the start at 0) on the
    head cell decoded at i-1 (cell 0 at 0); its cell must be that head cell. Context
    placement: answers alternate a_0 b_1 a_1 b_2 …; b_k looks up (state, read) of a_{k-1}
    at a_{k-1}'s head, names its move, and a_k's head must be where that move leads.
    """
    readings = []
    if context:
        for i in range(1, len(rows), 2):
            a, b = rows[i - 1], rows[i]
            if a["head"] == "out":
                break
            head = int(a["head"])
            moves = frozenset({b["move"]}) & set(MOVES)
            taken = i + 1 < len(rows)
            problem = None if moves else f"move {b['move']}"
            if taken and b["halt"] == "no" and moves:
                after = rows[i + 1]["head"]
                if not _move(head, after, cells) & moves:
                    problem = f"move {b['move']} from cell {head} lands on {after}"
            row = {**b, "read": a["read"]}
            readings.append((i, a["state"], head, row, moves, taken, problem))
        return readings
    state, head = start, 0
    for i, row in enumerate(rows):
        moves = _move(head, row["head"], cells)
        problem = (f"writes cell {row['cell']} with the head on {head}"
                   if row["cell"] != str(head) else
                   None if moves else f"no move takes the head from {head} to {row['head']}")
        taken = i + 1 < len(rows)
        readings.append((i, state, head, row, moves, taken, problem))
        if row["head"] == "out" or row["halt"] == "yes":
            break
        state, head = row["state"], int(row["head"])
    return readings


def read_machine(model: CompiledModel, budget: Budget,
                 rng: np.random.Generator) -> Decompilation:
    samples = budget.inputs  # the tape bounds the length
    interface = model.interface
    extra = interface.extra
    context = extra.get("placement") == "context"
    tape_symbols = tuple(str(s) for s in extra["tape"])
    blank, start = str(extra["blank"]), str(extra["start"])
    cells = int(interface.max_input_length or 0)
    words, exhaustive = _machine_inputs(interface, samples, rng)
    book = Book()  # (state, symbol) → (halt, write, next, moves) ; moves merge below
    reached: dict[str, None] = {start: None}
    executed: set[str] = set()
    reaching: dict[str, dict[tuple[str, ...], None]] = defaultdict(dict)  # state → inputs
    tried = set(words)

    def read(words: list[tuple[str, ...]]) -> None:
        for result in runs(model, words):
            margin, resolved = answers(model, result)
            word = result.input
            tape = list(word) + [blank] * (cells - len(word))
            rows = [dict(zip(result.decoded, values, strict=True))
                    for values in zip(*result.decoded.values(), strict=True)]
            readings = _machine_readings(rows, start, cells, context)
            for number, (i, state, head, row, moves, taken, problem) in enumerate(readings):
                symbol = tape[head]
                executed.add(state)
                reaching[state][word] = None
                example = {"input": list(word), "step": number}
                if row["halt"] == "yes":
                    value: tuple = ("yes", None, None, None)
                else:
                    if row["read"] != symbol:  # the model misreads its own tape
                        problem = f"reads {row['read']} where the tape holds {symbol}"
                    value = (("bad", problem) if problem else
                             ("no", row["write"], row["state"], moves))
                    reached.setdefault(row["state"], None)
                book.add((state, symbol), value, float(margin[i]), bool(resolved[i]),
                         example)
                if problem:
                    book.entries[(state, symbol)].invalid += 1
                if value[0] == "no" and taken:
                    tape[head] = row["write"]

    read(words)
    # Sampled inputs miss pairs that only structured inputs reach: search one edit away
    # (a symbol changed, inserted or cut off) from inputs that reach a state whose pair
    # with some tape symbol was never read: three rounds of at most a quarter of the budget.
    alphabet = tuple(interface.input_alphabet)
    sampled = len(words)
    for _ in range(0 if exhaustive else 3):
        missing = {q for q in executed
                   if any((q, a) not in book.entries for a in tape_symbols)  # never read
                   and all(v[0] == "no" for a in tape_symbols  # and q does not halt
                           for v in book.entries.get((q, a), Entry()).values)}
        near: dict[tuple[str, ...], None] = {}
        for q in sorted(missing):
            sources = list(reaching[q])
            for pick in rng.permutation(len(sources))[:8]:
                word = sources[int(pick)]
                for i in range(len(word) + 1):
                    near[word[:i]] = None
                    for a in alphabet:
                        near[word[:i] + (a,) + word[i + 1:]] = None
                        if len(word) < cells:
                            near[word[:i] + (a,) + word[i:]] = None
        fresh = [w for w in near if w not in tried and len(w) <= cells][:max(1, samples // 4)]
        if not fresh:
            break
        tried.update(fresh)
        words = words + fresh
        read(fresh)

    # Moves: the readings of an entry agree when their move sets intersect.
    for entry in book.entries.values():
        merged: dict[object, list] = {}
        for value, slot in entry.values.items():
            if value[0] != "no":
                merged.setdefault(value, [0, []])
                merged[value][0] += slot[0]
                merged[value][1].extend(slot[1][:MAX_EXAMPLES - len(merged[value][1])])
                continue
            for other in list(merged):
                if other[0] == "no" and other[1:3] == value[1:3] and other[3] & value[3]:
                    joined = (*value[:3], other[3] & value[3])
                    count, examples = merged.pop(other)
                    merged[joined] = [count + slot[0],
                                      (examples + slot[1])[:MAX_EXAMPLES]]
                    break
            else:
                merged[value] = [slot[0], list(slot[1])]
        entry.values = merged
    halting: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for (state, symbol), entry in book.entries.items():
        for value in entry.values:
            if value[0] in ("yes", "no"):
                halting[state][value[0]].append(symbol)
    for state, kinds in halting.items():
        if len(kinds) > 1:  # halting is a property of a state in `.lat`
            for verdict, symbols in kinds.items():
                book.add(("halt", state), verdict, math.inf, True,
                         {"reading": sorted(set(symbols))})

    states = [s for s in (*interface.output_field("state").values,) if s in reached
              or s in executed]
    if start not in states:
        states.insert(0, start)
    halt = [q for q in states if set(halting.get(q, ())) == {"yes"} or q not in executed]
    if not halt:  # `.lat` needs a halting state; none was seen: name one, unreachable
        spare = [s for s in interface.output_field("state").values if s not in states]
        halt = [spare[0] if spare else "halted"]
        states.append(halt[0])
    names = lat_names(states, "q")
    unobserved: list[str] = []
    ambiguous: list[str] = []
    program = None
    consistent = all(len(e.values) == 1 and e.unresolved == 0 for e in book.entries.values())
    if consistent:
        rules: list[ast.Rule] = []
        for q in states:
            if q in halt:
                continue
            groups: dict[tuple, list[str]] = {}
            for symbol in tape_symbols:
                entry = book.entries.get((q, symbol))
                if entry is None:
                    unobserved.append(f"{q} {symbol}")
                    action = (symbol, "S", q)
                else:
                    _, write, target, moves = next(iter(entry.values))
                    move = "S" if "S" in moves else sorted(moves)[0]
                    if len(moves) > 1:
                        ambiguous.append(f"{q} {symbol}")
                    action = (write, move, target)
                groups.setdefault(action, []).append(symbol)
            for (write, move, target), reads in groups.items():
                rules.append(ast.Rule(ast.Name(names[q]), tuple(as_symbol(s) for s in reads),
                                      as_symbol(write), move, ast.Name(names[target])))
        machine = ast.Machine(
            name=ast.Name(lat_names([interface.program], "decompiled")[interface.program]),
            tape=tuple(as_symbol(s) for s in tape_symbols), blank=as_symbol(blank),
            states=tuple(ast.Name(names[q]) for q in states), start=ast.Name(names[start]),
            halt=tuple(ast.Name(names[q]) for q in halt),
            bound=ast.Bound(int(extra["steps"]), cells), rules=tuple(rules))
        program = format_program(ast.Program((machine,)))
    searched = len(words) - sampled
    scope = ("every input up to the tape bound (exhaustive)" if exhaustive else
             f"{sampled} inputs\n  (sampled: all short ones, random ones up to the tape)"
             + (f" and {searched} one edit away\n  from inputs reaching states with pairs "
                "not yet read" if searched else ""))
    method = (f"method: run through its runtime on {scope};\n"
              f"  the tape replayed from its decoded writes, each answer position read as\n"
              f"  the entry (state, symbol under the head)")
    notes = []
    if unobserved:
        notes.append(f"{len(unobserved)} (state, symbol) pairs never read on these inputs, "
                     f"written as `q a -> a S q`: {', '.join(unobserved[:8])}"
                     + (" …" if len(unobserved) > 8 else ""))
    never = [q for q in states if q not in executed and q in reached]
    if not any(q in reached for q in halt):
        notes.append(f"no run was seen to halt: '{names[halt[0]]}' is declared halting "
                     "(unreachable) because a machine needs one")
    if never:
        notes.append(f"states reached but never executed (the run stopped first), written as "
                     f"halting: {', '.join(never)}")
    if ambiguous:
        notes.append(f"moves read only on cell 0, where L and S agree (written S): "
                     f"{', '.join(ambiguous[:8])}" + (" …" if len(ambiguous) > 8 else ""))

    def value_json(value: object) -> object:
        if not isinstance(value, tuple):
            return {"halt": value == "yes"}
        if value[0] == "bad":
            return {"invalid": value[1]}
        if value[0] == "yes":
            return {"halt": True}
        moves = sorted(value[3])
        return {"halt": False, "write": value[1], "move": moves[0] if len(moves) == 1
                else moves, "next": names.get(value[2], value[2])}

    positions = sum(e.readings for k, e in book.entries.items() if k[0] != "halt")
    report = finish("machine", book, lambda key: " ".join(key), value_json, program, method,
                    len(words), notes, {k: v for k, v in names.items() if k != v}, positions)
    report.scope = "exhaustive" if exhaustive else "sampled"
    return report


def compare_machines(report: Decompilation, model: CompiledModel, a: CheckedMachine,
                      b: CheckedMachine) -> None:
    report.comparison = ("transition-table equality on the reachable part (the entries the "
                         "model was seen to read), halting states, start and bounds")
    differences: list[dict[str, object]] = []
    for row in report.entries:
        key = row["key"]
        if key[0] == "halt" or row["value"] is None:
            continue
        state, symbol = (report.names.get(key[0], key[0]), key[1])
        value = row["value"]
        entry = f"{state} {symbol}"
        if value.get("halt"):
            if state not in b.halt:
                differences.append({"entry": entry, "model": "halt",
                                    "reference": b.rule_table.get((state, symbol), "halt")})
            continue
        theirs = "halt" if state in b.halt else b.rule_table.get((state, symbol))
        moves = value["move"] if isinstance(value["move"], list) else [value["move"]]
        if (theirs == "halt" or theirs is None or theirs[0] != value["write"]
                or theirs[1] not in moves or theirs[2] != value["next"]):
            differences.append({"entry": entry, "model": value, "reference": theirs})
    for name, mine, theirs in (("start", a.start, b.start), ("blank", a.blank, b.blank),
                               ("steps", a.max_steps, b.max_steps),
                               ("tape cells", a.tape_cells, b.tape_cells)):
        if mine != theirs:
            differences.append({"entry": name, "model": mine, "reference": theirs})
    if set(a.tape) != set(b.tape):
        differences.append({"entry": "tape", "model": list(a.tape), "reference": list(b.tape)})
    report.differences = differences
    report.equivalent_to_reference = not differences
    if not differences:
        return
    # A shortest input on which the two programs' runs differ, among the inputs tried.
    words, _ = _machine_inputs(model.interface, max(report.inputs, 1),
                               np.random.default_rng(0))
    for word in sorted(words, key=len):
        try:
            mine, theirs = interpret(a, word), interpret(b, word)
        except InputError:
            continue
        if mine != theirs:
            report.distinguishing_input = list(word)
            return
