"""The entry point: load or compile the model, hand it to its kind's reader, write the
header, check the program it gives, and compare with a reference (module docstring of
`lat.decompile`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lat.compiler.check import check_program
from lat.compiler.ir import Checked
from lat.compiler.parse import parse_program
from lat.decompile.automaton import compare_automata, read_automaton
from lat.decompile.machine import compare_machines, read_machine
from lat.decompile.memory import compare_memories, read_memory
from lat.decompile.readings import Budget
from lat.decompile.report import Decompilation, comment_lines, proof_lines
from lat.runtime.errors import InputError
from lat.runtime.model import CompiledModel


@dataclass(frozen=True)
class KindReader:
    """How one program kind is read off a model, and compared with a reference."""

    read: Callable[[CompiledModel, Budget, np.random.Generator], Decompilation]
    compare: Callable[[Decompilation, CompiledModel, Checked, Checked], None]


#: One reader per program kind, by the interface's kind name. A model of a kind missing
#: here is refused in one line; a new kind adds its reader module and one line here.
READERS: dict[str, KindReader] = {
    "automaton": KindReader(read_automaton, compare_automata),
    "memory": KindReader(read_memory, compare_memories),
    "machine": KindReader(read_machine, compare_machines),
}


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
    if interface.kind not in READERS:
        raise InputError(f"cannot decompile a model of kind '{interface.kind}'")
    report = READERS[interface.kind].read(model, Budget(samples, max_len, inputs),
                                          np.random.default_rng(seed))
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
            *proof_lines(report),
            *(line for note in report.notes for line in comment_lines(f"note: {note}")),
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


def _reference(against: Checked | str | Path) -> Checked:
    if not isinstance(against, (str, Path)):  # already a checked declaration
        return against
    path = Path(against)
    return check_program(parse_program(_read(path), str(path))).get()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def _compare(report: Decompilation, reference: Checked, model: CompiledModel) -> None:
    mine = report.declaration
    if type(mine) is not type(reference):
        report.equivalent_to_reference = False
        report.comparison = (f"the model is a {report.kind}, the reference a "
                             f"{type(reference).__name__.removeprefix('Checked').lower()}")
        return
    READERS[report.kind].compare(report, model, mine, reference)
