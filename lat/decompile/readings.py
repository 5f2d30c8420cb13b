"""Readings: every answer position of a run is one reading of one table entry.

The model runs through its own runtime as a black box (`runs`); each answer position gives
a value, a decode margin and whether fp32 resolves it (`answers`). A `Book` collects the
readings per entry; `finish` turns it into the report's entries and the consistency
verdict. Shared by the automaton, memory and machine readers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lat.compiler import ast
from lat.compiler.parse import RESERVED_WORDS
from lat.compiler.printer import format_symbol, is_plain_name
from lat.decompile.report import Decompilation, finite
from lat.runtime.execute import resolution, rollout
from lat.runtime.interface import Interface
from lat.runtime.model import CompiledModel

MAX_EXAMPLES = 3  # example prefixes kept per value seen at an entry


FLOATS_PER_CALL = 1 << 22  # recorded token floats per rollout call (memory bound)


@dataclass(frozen=True)
class Budget:
    """How much a reader may run: `samples` random words of length ≤ `max_len` besides the
    exploration (automata), and `inputs` machine inputs (every input up to the tape when
    there are at most this many)."""

    samples: int = 256
    max_len: int = 64
    inputs: int = 4096


@dataclass
class Entry:
    values: dict[object, list] = field(default_factory=dict)  # value → [count, examples]
    min_margin: float = math.inf
    unresolved: int = 0
    invalid: int = 0  # readings that are no transition of the program kind at all
    prefixes: set = field(default_factory=set)

    def add(self, value: object, margin: float, resolved: bool, example: dict) -> None:
        slot = self.values.setdefault(value, [0, []])
        slot[0] += 1
        examples = slot[1]  # the shortest inputs seen, shortest first
        size = len(example.get("input", ()))
        if example not in examples and (len(examples) < MAX_EXAMPLES
                                        or size < len(examples[-1].get("input", ()))):
            examples.append(example)
            examples.sort(key=lambda e: len(e.get("input", ())))
            del examples[MAX_EXAMPLES:]
        self.min_margin = min(self.min_margin, margin)
        self.unresolved += not resolved

    @property
    def readings(self) -> int:
        return sum(slot[0] for slot in self.values.values())


class Book:
    """Readings per entry key, in the order keys were first seen."""

    def __init__(self) -> None:
        self.entries: dict[tuple, Entry] = {}

    def add(self, key: tuple, value: object, margin: float, resolved: bool,
            example: dict, prefix: tuple | None = None) -> None:
        entry = self.entries.setdefault(key, Entry())
        entry.add(value, margin, resolved, example)
        if prefix is not None:
            entry.prefixes.add(prefix)

    @property
    def readings(self) -> int:
        return sum(e.readings for e in self.entries.values())


def _margins(interface: Interface, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position: the decode margin (min over output fields of top-1 minus top-2, a lone
    value's own size) and whether fp32 resolves it at that output's magnitude."""
    gaps = []
    for output_field, offset in interface.output_slices():
        block = outputs[:, offset:offset + output_field.width].astype(np.float64)
        if output_field.width == 1:
            gaps.append(block[:, 0])
            continue
        top2 = -np.partition(-block, 1, axis=1)[:, :2]
        gaps.append(top2[:, 0] - top2[:, 1])
    margin = np.min(np.stack(gaps), axis=0)
    magnitude = torch.from_numpy(np.abs(outputs).max(axis=1).astype(np.float64))
    floor = resolution(torch.float32, magnitude).numpy()
    return margin, margin > floor


def runs(model: CompiledModel, words: Sequence[tuple[str, ...]]):
    """Rollouts with their raw outputs, chunked so the recorded tokens stay bounded."""
    words = list(words)
    if not words:
        return []
    prompt = len(model.interface.prompt)
    longest = max(len(w) for w in words)
    steps = model.interface.max_steps
    length = prompt + (longest if steps is None else steps * len(model.interface.feed_cycle))
    per_call = max(1, FLOATS_PER_CALL // max(1, length * (model.d + model.d_out)))
    results = []
    for start in range(0, len(words), per_call):
        results.extend(rollout(model, words[start:start + per_call], record=True))
    return results


def answers(model: CompiledModel, result) -> tuple[np.ndarray, np.ndarray]:
    """Margins and resolution at the answer positions of one recorded run."""
    first = len(model.interface.prompt) - 1
    return _margins(model.interface, result.outputs[first:])


def lat_names(values: Sequence[str], prefix: str) -> dict[str, str]:
    """A valid, unique NAME for every value (plain names stay as they are)."""
    taken = {v for v in values if is_plain_name(v)}
    names = {}
    for value in values:
        if value in taken:
            names[value] = value
            continue
        base = re.sub(r"[^A-Za-z0-9_]", "_", value).strip("_") or prefix
        if not re.match(r"[A-Za-z_]", base) or base in RESERVED_WORDS:
            base = f"{prefix}_{base}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names[value] = name
    return names


def as_symbol(text: str) -> ast.Symbol:
    return ast.Symbol(text, quoted=format_symbol(text).startswith('"'))


def finish(kind: str, book: Book, describe, value_json, program: str | None,
           method: str, inputs: int, notes: list[str], names: dict[str, str],
           readings: int | None = None) -> Decompilation:
    """Entries and the consistency verdict from a book of readings."""
    entries, bad = [], []
    smallest = math.inf
    for key, entry in book.entries.items():
        agreed = len(entry.values) == 1 and not entry.invalid
        resolved = entry.unresolved == 0
        smallest = min(smallest, entry.min_margin)
        row: dict[str, object] = {
            "entry": describe(key),
            "key": list(key),
            "value": value_json(next(iter(entry.values))) if agreed else None,
            "readings": entry.readings,
            "prefixes": len(entry.prefixes) if entry.prefixes else entry.readings,
            "min_margin": finite(entry.min_margin),
            "agreed": agreed,
            "resolved": resolved,
        }
        entries.append(row)
        if not (agreed and resolved):
            reasons = []
            if len(entry.values) > 1:
                reasons.append("readings disagree")
            if entry.invalid:
                reasons.append(f"{entry.invalid} readings are no valid transition")
            if not resolved:
                reasons.append(f"{entry.unresolved} readings with a margin fp32 cannot resolve")
            bad.append({
                **row,
                "why": "; ".join(reasons),
                "seen": [{"value": value_json(value), "readings": count, "examples": examples}
                         for value, (count, examples) in entry.values.items()],
            })
    consistent = not bad
    return Decompilation(kind=kind, program=program if consistent else None, entries=entries,
                         consistent=consistent, min_margin=smallest, inconsistent=bad,
                         readings=book.readings if readings is None else readings,
                         inputs=inputs, method=method, notes=notes,
                         names=names)
