"""Decompile: from linear-attention weights (compiled, learned or trained) back to `.lat`.

An artifact carries its Interface — the finite token vocabulary, the decoded output fields
and the feedback rule — so its behaviour can be read off as a table, one entry per token
the program logic depends on, by running the model through its own runtime (`rollout`)
as a black box: a model is decompiled by what it does. V and Q are read only for one
extra, a bound (automata, weights placement) on the word length up to which every entry
provably decodes the value it was read with (`_length_bound`).

- **automaton**: from `bos`, breadth-first over decoded states (each new state gets the
  shortest word that reached it); then every (state, symbol) entry is read at every prefix
  the exploration found to reach that state — p·a for each p with δ(p's state, ·) = q —
  and at every position of `samples` random words of length ≤ `max_len`. The verdict is a
  property of a state in `.lat`, so it is read at every position that decodes that state.
- **memory**: every key of the interface's key vocabulary, and one key outside it when the
  interface maps unknown keys to a default (`input_other`).
- **machine** (weights placement; a bound context-placement executor too): every input up
  to the tape bound when there are at most `samples`, else all short ones and random ones
  up to the tape; the tape is replayed from the model's own decoded writes, and each answer
  position is a reading of the entry (current state, symbol under the head): next state,
  write, move (from the head cells; L and S cannot be told apart on cell 0) and halt.

**Consistency is measured, not assumed.** Each entry collects every reading: its value,
the smallest decode margin (top-1 minus top-2, over the output fields), whether the margin
clears what fp32 resolves, and example prefixes. An entry whose readings disagree (history
dependence through the state S_t) or whose margin fp32 cannot resolve makes the model *not
decompilable*: `consistent` is False, `program` is None and `inconsistent` lists the entries
with example inputs for each value seen. Nothing is rounded to a guess.

A consistent model gives a canonical `.lat` program (the compiler's printer) with a header
comment saying where it came from and how it was checked; the text is parsed and checked
again before it is returned. `against` (a checked declaration or a `.lat` path) compares
it with a reference: automata by minimising both DFAs and testing isomorphism (with the
renaming of minimal states, or a shortest distinguishing word found by breadth-first
search on the product automaton), memories by table equality (every key and the default),
machines by table equality on the reachable part (the entries the model was seen to read).

What this does not prove: readings are taken on finitely many prefixes (for automata the
exploration plus random words; for machines the inputs tried), so "consistent" means
"every reading taken agreed", stated with its counts in the report and the header.
"""

from __future__ import annotations

import math
import re
import textwrap
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np
import torch

from lat.compiler import ast
from lat.compiler.check import check_program
from lat.compiler.graph import minimise, to_ast
from lat.compiler.interpret import run as interpret
from lat.compiler.ir import (
    Checked,
    CheckedAutomaton,
    CheckedMachine,
    CheckedMemory,
    frozen_mapping,
)
from lat.compiler.parse import RESERVED_WORDS, parse_program
from lat.compiler.printer import format_program, format_symbol, is_plain_name
from lat.runtime.device import single_thread
from lat.runtime.errors import InputError
from lat.runtime.execute import resolution, rollout
from lat.runtime.interface import Interface
from lat.runtime.model import CompiledModel

__all__ = ["Decompilation", "decompile"]

MAX_EXAMPLES = 3  # example prefixes kept per value seen at an entry
FLOATS_PER_CALL = 1 << 22  # recorded token floats per rollout call (memory bound)
MOVES = ("L", "S", "R")


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


@dataclass
class Decompilation:
    """What `decompile` read from a model, the program it gives, and how it compares."""

    kind: str
    program: str | None  # the `.lat` text; None when the model is not decompilable
    entries: list[dict[str, object]]
    consistent: bool
    min_margin: float
    inconsistent: list[dict[str, object]]
    readings: int = 0  # answer positions read, over every input
    inputs: int = 0  # input words run
    method: str = ""
    scope: str = ""  # "exhaustive" (every input of the domain read) or "sampled"
    seconds: float = 0.0
    source: str = ""
    placement: str = "weights"
    notes: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # model value → name in the program
    declaration: Checked | None = field(default=None, repr=False)
    reference: str | None = None
    equivalent_to_reference: bool | None = None
    distinguishing_input: list[str] | None = None
    renaming: dict[str, str] | None = None
    differences: list[dict[str, object]] | None = None
    comparison: str | None = None
    proven_length: int | None = None  # automata: every word this long or shorter, proven
    proven_unbounded: bool = False  # ... or every word of every length

    def to_json(self) -> dict[str, object]:
        """The `lat decompile --json` object."""
        report: dict[str, object] = {
            "kind": self.kind,
            "program": self.program,
            "consistent": self.consistent,
            "min_margin": _finite(self.min_margin),
            "inconsistent": self.inconsistent,
            "entries": self.entries,
            "readings": self.readings,
            "inputs": self.inputs,
            "method": self.method,
            "scope": self.scope,
            "placement": self.placement,
            "source": self.source,
            "notes": self.notes,
            "names": self.names,
            "proven_length": ("unbounded" if self.proven_unbounded
                              else self.proven_length),
            "seconds": round(self.seconds, 3),
        }
        if self.reference is not None:
            report.update({
                "reference": self.reference,
                "equivalent_to_reference": self.equivalent_to_reference,
                "distinguishing_input": self.distinguishing_input,
                "renaming": self.renaming,
                "differences": self.differences,
                "comparison": self.comparison,
            })
        return report


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------
# Readings: every answer position is one reading of one table entry
# --------------------------------------------------------------------------------------


@dataclass
class _Entry:
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


class _Book:
    """Readings per entry key, in the order keys were first seen."""

    def __init__(self) -> None:
        self.entries: dict[tuple, _Entry] = {}

    def add(self, key: tuple, value: object, margin: float, resolved: bool,
            example: dict, prefix: tuple | None = None) -> None:
        entry = self.entries.setdefault(key, _Entry())
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


def _runs(model: CompiledModel, words: Sequence[tuple[str, ...]]):
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


def _answers(model: CompiledModel, result) -> tuple[np.ndarray, np.ndarray]:
    """Margins and resolution at the answer positions of one recorded run."""
    first = len(model.interface.prompt) - 1
    return _margins(model.interface, result.outputs[first:])


# --------------------------------------------------------------------------------------
# Names: decoded values become `.lat` names
# --------------------------------------------------------------------------------------


def _names(values: Sequence[str], prefix: str) -> dict[str, str]:
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


def _symbol(text: str) -> ast.Symbol:
    return ast.Symbol(text, quoted=format_symbol(text).startswith('"'))


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def decompile(
    model: CompiledModel | str | Path,
    *,
    against: Checked | str | Path | None = None,
    samples: int = 256,
    max_len: int = 64,
    inputs: int = 4096,
    seed: int = 0,
    source: str | None = None,
) -> Decompilation:
    """Read `model`'s program off its behaviour; see the module docstring.

    samples / max_len: random words read besides the exploration (automata).
    inputs: the machines' input budget (every input up to the tape when there are at most
    this many; else all short ones and random ones).
    against: a reference program (checked declaration or `.lat` path) to compare with.
    source: how the model is named in the header comment (default: its path or program).
    """
    started = time.perf_counter()
    if not isinstance(model, CompiledModel):
        source = source or str(model)
        if Path(model).suffix == ".lat":  # a program: compiled on the fly, like `lat run`
            from lat.compiler import compile_source

            model = compile_source(_read(Path(model)), str(model)).model
        else:
            model = CompiledModel.load(model)
    interface = model.interface
    placement = str(interface.extra.get("placement", "weights"))
    if placement == "context" and interface.program == "<universal>":
        raise InputError("this artifact is a universal executor: it holds no program of its "
                         "own; bind one (--program FILE) and decompile the bound model")
    rng = np.random.default_rng(seed)
    readers = {"automaton": _automaton, "memory": _memory, "machine": _machine}
    if interface.kind not in readers:
        raise InputError(f"cannot decompile a model of kind '{interface.kind}'")
    budget = inputs if interface.kind == "machine" else samples
    report = readers[interface.kind](model, budget, max_len, rng)
    report.placement = placement
    if placement == "context":
        bound = model.info.get("bound_program", interface.program)
        report.notes.append(f"the program '{bound}' in the executor's prompt, read from the "
                            "executor's behaviour (not from the prompt's text)")
    report.source = source or interface.program
    origin = model.info.get("origin", "unknown")
    if report.consistent:
        header = [
            f"# decompiled by `lat decompile` from {report.source}",
            f"#   (tensor sha256 {model.sha256()[:16]}, origin: {origin}, placement: "
            f"{placement}, H={model.heads}, d={model.d})",
            *(f"# {line}" for line in report.method.split("\n")),
            f"# verified: {len(report.entries)} entries, {report.readings} readings on "
            f"{report.inputs} inputs, every reading agreed;",
            f"#   smallest decode margin {report.min_margin:.3g} (resolved in fp32)",
            *_proof_lines(report),
            *(line for note in report.notes for line in _comment(f"note: {note}")),
        ]
        text = "\n".join(header) + "\n" + report.program
        checked = check_program(parse_program(text, "<decompiled>"))  # `lat check` accepts it
        report.program = text
        report.declaration = checked.declarations[0]
    if against is not None:
        reference = _reference(against)
        report.reference = str(against) if isinstance(against, (str, Path)) else reference.name
        if report.declaration is not None:
            _compare(report, reference, model)
    report.seconds = time.perf_counter() - started
    return report


def _comment(text: str) -> list[str]:
    """A header comment wrapped to 100 columns, continuation lines indented."""
    lines = textwrap.wrap(text, 96, subsequent_indent="  ", break_on_hyphens=False)
    return [f"# {line}" for line in lines]


def _proof_lines(report: Decompilation) -> list[str]:
    if report.proven_unbounded:
        return ["# proven from V and Q: every entry decodes its value on words of every "
                "length"]
    if report.proven_length is None:
        return []
    if report.proven_length < 1:
        return ["# V and Q alone prove no length: the per-token bound lets every token occur",
                "#   any number of times, and this model's cross terms cancel only on the",
                "#   token counts runs produce (the readings above are the evidence)"]
    return [f"# proven from V and Q: every entry decodes its value on every word of length "
            f"≤ {report.proven_length:,}"]


def _reference(against: Checked | str | Path) -> Checked:
    if isinstance(against, (CheckedAutomaton, CheckedMemory, CheckedMachine)):
        return against
    path = Path(against)
    return check_program(parse_program(_read(path), str(path))).get()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def _finish(kind: str, book: _Book, describe, value_json, program: str | None,
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
            "min_margin": _finite(entry.min_margin),
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


# --------------------------------------------------------------------------------------
# Automata
# --------------------------------------------------------------------------------------


def _automaton(model: CompiledModel, samples: int, max_len: int,
               rng: np.random.Generator) -> Decompilation:
    interface = model.interface
    alphabet = tuple(interface.input_alphabet)
    state_field, verdict_field = interface.trace_field or "state", interface.result_field
    book, verdicts = _Book(), _Book()
    access: dict[str, tuple[str, ...]] = {}  # state → shortest word found reaching it
    reaching: dict[str, list[tuple[str, ...]]] = defaultdict(list)  # state → prefixes
    expanded: set[str] = set()
    inputs = 0

    def read(words: list[tuple[str, ...]]) -> None:
        nonlocal inputs
        inputs += len(words)
        for result in _runs(model, words):
            margin, resolved = _answers(model, result)
            word = result.input
            trace, verdict = result.decoded[state_field], result.decoded[verdict_field]
            for t, (state, answer) in enumerate(zip(trace, verdict, strict=True)):
                key = ("bos",) if t == 0 else (trace[t - 1], word[t - 1])
                example = {"input": list(word[:t])}
                book.add(key, (state, answer), float(margin[t]), bool(resolved[t]),
                         example, word[:t])
                verdicts.add(("accept", state), answer, float(margin[t]), bool(resolved[t]),
                             example)
                if state not in access:
                    access[state] = word[:t]
                    reaching[state].append(word[:t])

    # Breadth-first exploration: one rollout per layer, each state expanded once.
    read([()])
    while True:  # ends: the state field's values are finite
        frontier = [q for q in access if q not in expanded]
        if not frontier:
            break
        words = [access[q] + (a,) for q in frontier for a in alphabet]
        expanded.update(frontier)
        read(words)
        for q in frontier:  # record which prefixes reach which state
            for a in alphabet:
                entry = book.entries.get((q, a))
                if entry is not None and len(entry.values) == 1:
                    target = next(iter(entry.values))[0]
                    if access[q] + (a,) != access.get(target):
                        reaching[target].append(access[q] + (a,))
    # Every entry at every prefix reaching its state, then random words.
    extra = [p + (a,) for q in access for p in reaching[q][1:] for a in alphabet]
    lengths = rng.integers(1, max(max_len, 1) + 1, size=samples)
    extra += [tuple(alphabet[i] for i in rng.integers(0, len(alphabet), size=n))
              for n in lengths]
    read(extra)
    # States first decoded by those words (only a model with disagreeing readings, or one
    # whose random words reach what the exploration did not) are explored as well.
    while True:  # ends: the state field's values are finite
        frontier = [q for q in access if q not in expanded]
        if not frontier:
            break
        expanded.update(frontier)
        read([access[q] + (a,) for q in frontier for a in alphabet])

    # Verdicts are per state in `.lat`: one more entry per state.
    for key, entry in verdicts.entries.items():
        book.entries[key] = entry
    states = list(access)
    names = _names(states, "q")
    start_entry = book.entries[("bos",)]
    program = None
    consistent = all(len(e.values) == 1 and e.unresolved == 0 for e in book.entries.values())
    if consistent:
        table = {(names[q], a): names[next(iter(book.entries[(q, a)].values))[0]]
                 for q in states for a in alphabet}
        accept = frozenset(names[q] for q in states
                           if next(iter(verdicts.entries[("accept", q)].values)) == "accept")
        automaton = CheckedAutomaton(
            name=_names([interface.program], "decompiled")[interface.program],
            alphabet=alphabet, states=tuple(names[q] for q in states),
            start=names[next(iter(start_entry.values))[0]], accept=accept,
            transition_table=frozen_mapping(table), source=None)
        program = format_program(ast.Program((to_ast(automaton),)))
        minimal = len(minimise(automaton).states)
    prefixes = sum(len(e.prefixes) for k, e in book.entries.items() if k[0] != "accept")
    method = (f"method: run through its runtime from bos, breadth-first over the "
              f"{len(states)} decoded states;\n"
              f"  each (state, symbol) entry read at every prefix found reaching its state\n"
              f"  and along {samples} random words of length ≤ {max_len} "
              f"({prefixes} distinct prefixes)")
    readings = sum(e.readings for k, e in book.entries.items() if k[0] != "accept")
    notes = []
    if program is not None:
        notes.append(f"{len(states)} reachable states, {minimal} after minimisation")
    unvisited = [v for v in interface.output_field(state_field).values if v not in access]
    if unvisited:
        notes.append(f"{len(unvisited)} state values of the interface never decoded: left out")
    report = _finish(
        "automaton", book,
        lambda key: "start" if key == ("bos",) else " ".join(key),
        lambda value: ({"state": names.get(value[0], value[0]), "accept": value[1]}
                       if isinstance(value, tuple) else value),
        program, method, inputs, notes, {k: v for k, v in names.items() if k != v},
        readings)
    report.scope = "sampled"  # every state explored; prefixes: the exploration and a sample
    if program is not None:
        _length_bound(model, book, report)
    return report


def _length_bound(model: CompiledModel, book: _Book, report: Decompilation) -> None:
    """A bound from the weights, beside the readings: the word length up to which every
    entry provably decodes the value it was read with (automaton, weights placement).

    Tokens are unit vectors (bos, or one (state, symbol) pair), so at a prefix with counts
    n_u the output for current token z is Σ_u n_u·w_u(z), w_u(z) = Σ_h V_h[:, u]·Q_h[u, z].
    For the value v read and any rival v' of one output field, with D_u = w_u[v] − w_u[v']:
    margin ≥ D_bos + D_z + (t−1)·min(0, min_u D_u) at the t-th symbol (n_bos = 1, n_z ≥ 1,
    t tokens besides bos), and |y| ≤ |w_bos| + t·max_u |w_u|. Taken over all rivals at once
    (the smallest D_bos + D_z, the most negative D_u), the bound is the largest t at which
    that margin still clears fp32's resolution (64 ulps), for every entry and field. Every
    token of the vocabulary is allowed to occur — a superset of what a run can produce — so
    the bound is sound for any word (by induction over positions).
    """
    interface = model.interface
    names = [f.name for f in interface.token_fields]
    if names != ["bos", "state_symbol"] or interface.extra.get("placement") == "context":
        report.notes.append("length bound from the weights: not applicable (not the "
                            "weights-placement automaton layout)")
        return
    pairs = interface.token_field("state_symbol")
    offset = interface.token_offset("state_symbol")
    V = model.V.to(torch.float32).to(torch.float64)  # the weights as fp32 runs them
    Q = model.Q.to(torch.float32).to(torch.float64)
    c = 64 * float(torch.finfo(torch.float32).eps)
    largest = V.abs().amax(dim=1)  # (H, d)
    keys = [k for k in book.entries if k[0] != "accept"]
    values = [next(iter(book.entries[k].values)) for k in keys]
    columns = [0 if k == ("bos",) else offset + pairs.index(k) for k in keys]
    bounds: dict[tuple, float] = {}
    step = max(1, (1 << 21) // max(1, model.d * model.d_out))
    with single_thread(True):
        for start in range(0, len(keys), step):
            z = torch.tensor(columns[start:start + step])
            rows = torch.arange(len(z))
            W = torch.einsum("hou,huz->zou", V, Q[:, :, z])  # (Z, d_out, d): w_u(z)
            # upper bounds on |w_bos| and max_u |w_u|: Σ_h max_o |V_h[o,u]|·|Q_h[u,z]|
            reach = torch.einsum("hu,huz->zu", largest, Q[:, :, z].abs())
            size, grow = reach[:, 0], reach.amax(dim=1)
            best = torch.full((len(z),), math.inf, dtype=torch.float64)
            for j, (output, first) in enumerate(interface.output_slices()):
                if output.width < 2:
                    continue
                block = W[:, first:first + output.width, :]  # (Z, k, d)
                v = torch.tensor([output.values.index(value[j])
                                  for value in values[start:start + step]])
                top = block[rows, v]  # (Z, d): w_u[v]
                # every rival at once: its margin at the t-th symbol is at least
                # min_v' (D_bos + D_z) − (t−1)·max(0, −min_u min_v' D_u)
                two, which = block.topk(2, dim=1)  # (Z, 2, d)
                rival = torch.where(which[:, 0] == v[:, None], two[:, 1], two[:, 0])
                drift = (rival[:, 1:] - top[:, 1:]).amax(dim=1).clamp(min=0.0)
                ends = torch.stack([torch.zeros_like(z), z], dim=1)  # bos and z columns
                pair = block.gather(2, ends[:, None, :].expand(-1, output.width, 2)).sum(2)
                pair[rows, v] = math.inf  # v is not its own rival
                base = top.gather(1, ends).sum(1) - pair.amin(dim=1)
                head = base + drift - c * (1.0 + size)
                rate = c * grow + drift
                t = torch.where(head <= 0, torch.zeros_like(head),
                                torch.where(rate > 0, torch.ceil(head / rate) - 1,
                                            torch.full_like(head, math.inf)))
                # bos is read at position 0 only: y = w_bos, margin min_v' D_bos exactly
                bos_margin = top[:, 0] - torch.where(which[:, 0, 0] == v, two[:, 1, 0],
                                                     two[:, 0, 0])
                first_only = torch.where(bos_margin > c * size.clamp(min=1.0), math.inf, 0.0)
                best = torch.minimum(best, torch.where(z == 0, first_only, t))
            for key, bound in zip(keys[start:start + step], best.tolist(), strict=True):
                bounds[key] = bound
    proven = min(bounds.values(), default=math.inf)
    for row, key in zip(report.entries, book.entries, strict=False):
        if key in bounds:
            row["proven_up_to"] = None if math.isinf(bounds[key]) else int(bounds[key])
    report.proven_length = None if math.isinf(proven) else int(proven)
    report.proven_unbounded = math.isinf(proven)


def _compare_automata(report: Decompilation, model: CompiledModel,
                      a: CheckedAutomaton, b: CheckedAutomaton) -> None:
    report.comparison = "minimal DFAs isomorphic (languages equal)"
    report.differences = [
        {"entry": f"{q} {s}", "model": target, "reference": b.transition_table[q, s]}
        for (q, s), target in a.transition_table.items()
        if (q, s) in b.transition_table and b.transition_table[q, s] != target
    ] + [
        {"entry": f"accept {q}", "model": q in a.accept, "reference": q in b.accept}
        for q in a.states if q in b.states and (q in a.accept) != (q in b.accept)
    ]
    if a.start != b.start and b.start in a.states:
        report.differences.append({"entry": "start", "model": a.start, "reference": b.start})
    if set(a.alphabet) != set(b.alphabet):
        report.equivalent_to_reference = False
        only = sorted(set(a.alphabet) ^ set(b.alphabet))
        report.distinguishing_input = [only[0]]
        report.comparison = f"alphabets differ: {', '.join(only)} in one only"
        return
    small_a, small_b = minimise(a), minimise(b)
    pairing = {small_a.start: small_b.start}
    queue = deque([small_a.start])
    iso = len(small_a.states) == len(small_b.states)
    while queue and iso:
        p = queue.popleft()
        q = pairing[p]
        if (p in small_a.accept) != (q in small_b.accept):
            iso = False
            break
        for s in small_a.alphabet:
            p2, q2 = small_a.transition_table[p, s], small_b.transition_table[q, s]
            if p2 not in pairing:
                pairing[p2] = q2
                queue.append(p2)
            elif pairing[p2] != q2:
                iso = False
                break
    iso = iso and len(set(pairing.values())) == len(pairing)
    report.equivalent_to_reference = iso
    if iso:
        report.renaming = dict(pairing)
        return
    # Shortest distinguishing word: breadth-first on the product automaton.
    start = (a.start, b.start)
    seen = {start: ()}
    queue = deque([start])
    while queue:
        p, q = pair = queue.popleft()
        if (p in a.accept) != (q in b.accept):
            word = seen[pair]
            report.distinguishing_input = list(word)
            verdict = rollout(model, [word])[0].value(model.interface.result_field)
            report.comparison = (f"languages differ: on {list(word)} the model says "
                                 f"{verdict}, the reference "
                                 f"{'accept' if q in b.accept else 'reject'}")
            return
        for s in a.alphabet:
            nxt = (a.transition_table[p, s], b.transition_table[q, s])
            if nxt not in seen:
                seen[nxt] = seen[pair] + (s,)
                queue.append(nxt)


# --------------------------------------------------------------------------------------
# Memories
# --------------------------------------------------------------------------------------


def _memory(model: CompiledModel, samples: int, max_len: int,
            rng: np.random.Generator) -> Decompilation:
    interface = model.interface
    keys = list(interface.input_alphabet)
    other = interface.input_other
    words = [(k,) for k in keys]
    if other is not None:
        probe = other
        while probe in keys:
            probe = "<" + probe + ">"
        words.append((probe,))
    book = _Book()
    field_name = interface.result_field
    for result in _runs(model, words):
        margin, resolved = _answers(model, result)
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
            name=ast.Name(_names([interface.program], "decompiled")[interface.program]),
            entries=tuple(ast.Entry(_symbol(k), _symbol(value(("key", k)))) for k in keys),
            default=None if default is None else _symbol(default))
        program = format_program(ast.Program((memory,)))
    method = (f"method: every key of the interface's vocabulary ({len(keys)})"
              + (" and one key outside it (the default)" if other is not None else "")
              + " looked up through the runtime")
    report = _finish("memory", book,
                     lambda key: "default" if key == ("default",) else key[1],
                     lambda value: value, program, method, len(words), [], {})
    report.scope = "exhaustive"
    return report


def _compare_memories(report: Decompilation, a: CheckedMemory, b: CheckedMemory) -> None:
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


# --------------------------------------------------------------------------------------
# Machines
# --------------------------------------------------------------------------------------


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


def _machine(model: CompiledModel, samples: int, max_len: int,
             rng: np.random.Generator) -> Decompilation:
    interface = model.interface
    extra = interface.extra
    context = extra.get("placement") == "context"
    tape_symbols = tuple(str(s) for s in extra["tape"])
    blank, start = str(extra["blank"]), str(extra["start"])
    cells = int(interface.max_input_length or 0)
    words, exhaustive = _machine_inputs(interface, samples, rng)
    book = _Book()  # (state, symbol) → (halt, write, next, moves) ; moves merge below
    reached: dict[str, None] = {start: None}
    executed: set[str] = set()
    reaching: dict[str, dict[tuple[str, ...], None]] = defaultdict(dict)  # state → inputs
    tried = set(words)

    def read(words: list[tuple[str, ...]]) -> None:
        for result in _runs(model, words):
            margin, resolved = _answers(model, result)
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
                           for v in book.entries.get((q, a), _Entry()).values)}
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
    names = _names(states, "q")
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
                rules.append(ast.Rule(ast.Name(names[q]), tuple(_symbol(s) for s in reads),
                                      _symbol(write), move, ast.Name(names[target])))
        machine = ast.Machine(
            name=ast.Name(_names([interface.program], "decompiled")[interface.program]),
            tape=tuple(_symbol(s) for s in tape_symbols), blank=_symbol(blank),
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
    report = _finish("machine", book, lambda key: " ".join(key), value_json, program, method,
                     len(words), notes, {k: v for k, v in names.items() if k != v}, positions)
    report.scope = "exhaustive" if exhaustive else "sampled"
    return report


def _compare_machines(report: Decompilation, model: CompiledModel, a: CheckedMachine,
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


def _compare(report: Decompilation, reference: Checked, model: CompiledModel) -> None:
    mine = report.declaration
    if type(mine) is not type(reference):
        report.equivalent_to_reference = False
        report.comparison = (f"the model is a {report.kind}, the reference a "
                             f"{type(reference).__name__.removeprefix('Checked').lower()}")
        return
    if isinstance(mine, CheckedAutomaton):
        _compare_automata(report, model, mine, reference)
    elif isinstance(mine, CheckedMemory):
        _compare_memories(report, mine, reference)
    else:
        _compare_machines(report, model, mine, reference)
