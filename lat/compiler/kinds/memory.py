"""The memory kind: a finite key → value table, from its checks to its run report
(docs/ARCHITECTURE.md, "Adding a kind").

The lowering itself is lower/memory.py (one-hot or random key embeddings, weights or
context placement) and the reference interpreter `interpret.run_memory`; this module holds
everything else a memory means and fills in its `Kind`. A memory's input is one key, and
its run is one lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lat.compiler import ast
from lat.compiler.check import Report, at_text, check_header, check_symbols_written, show
from lat.compiler.errors import Diagnostic, LatError
from lat.compiler.interpret import MemoryRun, run_memory
from lat.compiler.ir import CheckedMemory, frozen_mapping
from lat.compiler.kinds.base import ALWAYS_DENSE_BYTES, Kind, StepBound
from lat.compiler.lower import Estimate
from lat.compiler.printer import INDENT, format_symbol, header_lines
from lat.runtime.errors import InputError

if TYPE_CHECKING:
    from lat.compiler.lower import Lowered
    from lat.compiler.lower.memory import Embedding
    from lat.runtime.execute import RunResult
    from lat.runtime.interface import Interface

#: the verify domain's stand-ins for keys outside the table (they take the default)
OUTSIDE_KEYS = (("<not-a-key>",), ("",))


def check_memory(m: ast.Memory, report: Report) -> CheckedMemory | None:
    """The checked memory, or None after reporting what is wrong with `m`."""
    errors_before = len(report.errors)
    check_header(m, "memory", {}, report, {"default": m.default is not None})
    if not m.entries:
        report.error(m.pos, f"memory '{m.name.text}' has no entries", "add lines KEY -> VALUE")
    check_symbols_written([e.key for e in m.entries] + [e.value for e in m.entries]
                          + [m.default], report)
    first: dict[str, ast.Pos] = {}
    for entry in m.entries:
        if entry.key.text in first:
            report.error(entry.key.pos, f"key {show(entry.key.text)} is listed twice",
                         f"the first is at {at_text(first[entry.key.text])}; "
                         "a memory maps each key to one value")
        else:
            first[entry.key.text] = entry.pos
    if len(report.errors) > errors_before:
        return None
    return CheckedMemory(
        name=m.name.text,
        table=frozen_mapping({e.key.text: e.value.text for e in m.entries}),
        default=m.default.text if m.default is not None else None,
        source=m,
    )


def format_memory(m: ast.Memory) -> list[str]:
    """Canonical lines: the entries as written, then the default."""
    lines = [f"memory {m.name.text} {{"]
    lines += [f"{INDENT}{format_symbol(entry.key)} -> {format_symbol(entry.value)}"
              for entry in m.entries]
    if m.default is not None:
        lines += header_lines(("default", format_symbol(m.default)))
    return lines


def interpret(m: CheckedMemory, word: Sequence[str] | str) -> MemoryRun:
    """One lookup: `word` is the key, or a word of exactly one symbol."""
    if isinstance(word, str):
        return run_memory(m, word)
    if len(word) != 1:
        raise InputError(f"memory '{m.name}' takes one key, not {len(word)}")
    return run_memory(m, word[0])


def estimate(m: CheckedMemory, placement: str, dim: int | None = None) -> Estimate:
    """One head over the key embedding (`dim` wide when random); the margin check's Gram
    matrices are the working set. A big one-hot table's lowering may be sparse: then the
    lowering's own estimate counts."""
    keys = len(m.keys) + (m.default is not None)
    values = len(m.values)
    width = dim or keys
    d = width + (values if placement == "context" else 0)
    working = 8 * keys * width + 16 * keys * keys + 8 * values * keys
    dense = Estimate.of(heads=1, d=d, d_out=values, working=working, steps=1)
    if dense.weight_bytes < ALWAYS_DENSE_BYTES:
        return dense
    from lat.compiler.lower.memory import lowering_estimate

    return lowering_estimate(keys, values, placement, dim)


def _embedding_errors(lower_fn: Callable[[CheckedMemory, Embedding], Lowered],
                      m: CheckedMemory, embedding: Embedding | None, filename: str) -> Lowered:
    """Report a too-small random embedding at the declaration, as a program error."""
    from lat.compiler.lower.memory import Embedding, EmbeddingTooSmall

    try:
        return lower_fn(m, embedding or Embedding())
    except EmbeddingTooSmall as exc:
        raise LatError(Diagnostic(filename, m.source.pos, str(exc),
                                  "raise --dim or use --embedding onehot")) from None


def lower_weights(m: CheckedMemory, embedding: Embedding | None, filename: str) -> Lowered:
    from lat.compiler.lower.memory import lower_memory

    return _embedding_errors(lower_memory, m, embedding, filename)


def lower_context(m: CheckedMemory, embedding: Embedding | None, filename: str) -> Lowered:
    """The universal memory sized for `m`, which binds as the prompt."""
    from lat.compiler.lower.memory import lower_memory_context_for

    return _embedding_errors(lower_memory_context_for, m, embedding, filename)


def bind(interface: Interface, m: CheckedMemory) -> Interface:
    from lat.compiler.lower.memory import bind_memory

    return bind_memory(interface, m)


def readout(interface: Interface, result: RunResult) -> dict[str, object]:
    return {"steps": 1}  # one lookup, as the interpreter counts it


def expected(m: CheckedMemory, word: tuple[str, ...]) -> dict[str, object]:
    return {"output": run_memory(m, word[0]).output}


def verify_inputs(m: CheckedMemory, max_len: int, samples: int,
                  seed: int) -> tuple[list[tuple[str, ...]], str]:
    """Every key, and with a default two keys outside the table: always exhaustive."""
    keys = [(key,) for key in m.keys]
    if m.default is not None:  # keys outside the table take the default
        keys += list(OUTSIDE_KEYS)
    return keys, "exhaustive"


def longest_input(m: CheckedMemory, max_len: int) -> int:
    return 1


def worst_case_steps(interface: Interface, longest_input: int) -> StepBound:
    return StepBound(1, "one lookup:")


KIND = Kind(
    name="memory",
    syntax=ast.Memory,
    checked=CheckedMemory,
    check=check_memory,
    format=format_memory,
    interpret=interpret,
    estimate=estimate,
    lower={"weights": lower_weights, "context": lower_context},
    bind=bind,
    readout=readout,
    expected=expected,
    verify_inputs=verify_inputs,
    longest_input=longest_input,
    worst_case_steps=worst_case_steps,
    source_strategy="memory_sources",
    strategy_defaults={"max_pairs": 12},
    fixed_verify_domain="a memory's verify checks every key (and keys outside the table)",
    takes_embedding=True,
)
