"""`.lat` text → runtime artifact. The whole pipeline, one pass per line (see `compile_source`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lat.compiler.bind import bind_program
from lat.compiler.check import check_program
from lat.compiler.errors import Diagnostic, LatError
from lat.compiler.ir import CheckedAutomaton, CheckedMachine, CheckedMemory
from lat.compiler.lower import DEFAULT_MAX_MEMORY, Estimate, Lowered, estimate, format_bytes
from lat.compiler.lower.memory import Embedding
from lat.compiler.parse import parse_program
from lat.runtime.model import CompiledModel

PLACEMENTS = ("weights", "context")
Checked = CheckedAutomaton | CheckedMemory | CheckedMachine


@dataclass(frozen=True)
class Compilation:
    """What a compile produced: the artifact, the checked declaration and the warnings."""

    model: CompiledModel
    declaration: Checked
    warnings: tuple[Diagnostic, ...]
    executor: CompiledModel | None = None  # what to save: the model, or the unbound executor

    @property
    def artifact(self) -> CompiledModel:
        return self.executor if self.executor is not None else self.model


def compile_source(
    text: str,
    filename: str = "<string>",
    *,
    name: str | None = None,
    placement: str = "weights",
    minimise: bool = False,
    embedding: Embedding | None = None,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
) -> Compilation:
    """Compile one declaration of a `.lat` source to an MHLA artifact.

    With placement "context" the artifact is the universal executor for the program's sizes
    and the returned model is already bound to the program (`bind_program`); the saved
    artifact is the unbound executor, which runs any program of those sizes.
    Before anything is allocated the sizes are estimated, and a compile needing more than
    `max_memory` bytes (None: no limit) is refused at the declaration (`guard_size`).
    """
    program = parse_program(text, filename)
    checked = check_program(program)
    declaration = checked.get(name)
    if minimise:
        declaration = minimise_declaration(declaration, filename)
    if embedding is not None and embedding.kind != "onehot" and not isinstance(
            declaration, CheckedMemory):
        raise LatError(Diagnostic(filename, declaration.source.pos,
                                  f"--embedding {embedding.kind} applies to memories only",
                                  f"'{declaration.name}' is {_a(_kind(declaration))}: "
                                  "leave out --embedding, --dim and --seed"))
    guard_size(declaration, placement, filename, max_memory,
               embedding.dim if embedding is not None and embedding.kind == "random" else None)
    lowered = lower(declaration, placement, filename, embedding)
    model = assemble(lowered, declaration, placement, text)
    if placement == "context":  # the executor remembers its program: the default prompt
        model = model.with_info(default_program={"source": text, "name": declaration.name,
                                                 "minimise": minimise})
    executor = model
    if placement == "context":
        model = bind_program(executor, declaration)
    return Compilation(model=model, declaration=declaration, warnings=checked.warnings,
                       executor=executor)


def guard_size(declaration: Checked, placement: str, filename: str, max_memory: int | None,
               dim: int | None = None) -> Estimate:
    """The declaration's size estimate, or a LatError (at its bound or its name) when
    building it would need more than `max_memory` bytes."""
    sizes = estimate(declaration, placement, dim)
    if max_memory is not None and sizes.peak_bytes > max_memory:
        source = declaration.source
        pos = source.bound.pos if isinstance(declaration, CheckedMachine) else source.pos
        raise LatError(Diagnostic(
            filename, pos,
            f"{_kind(declaration)} '{declaration.name}' ({placement} placement) needs "
            f"{sizes.describe()}, above the --max-memory limit of {format_bytes(max_memory)}",
            "make the program smaller, or raise --max-memory (e.g. --max-memory 64G) on a "
            "machine that has the memory"))
    return sizes


def bind_default_program(model: CompiledModel) -> CompiledModel:
    """A context-placement executor bound to the program it was compiled from (recorded in
    its info as `default_program`); `model` itself when it has none or is bound already."""
    remembered = model.info.get("default_program")
    if (model.interface.extra.get("placement") != "context" or model.interface.prompt[:-1]
            or not isinstance(remembered, dict)):
        return model
    source = str(remembered.get("source", ""))
    name = remembered.get("name")
    filename = f"<program remembered by the artifact: {name}>"
    declaration = check_program(parse_program(source, filename)).get(name)
    if remembered.get("minimise"):
        declaration = minimise_declaration(declaration, filename)
    return bind_program(model, declaration)


def minimise_declaration(declaration: Checked, filename: str) -> Checked:
    from lat.compiler.graph import minimise

    if not isinstance(declaration, CheckedAutomaton):
        raise LatError(Diagnostic(filename, declaration.source.pos,
                                  "--minimise applies to automata only",
                                  f"'{declaration.name}' is {_a(_kind(declaration))}"))
    return minimise(declaration)


def lower(
    declaration: Checked, placement: str, filename: str, embedding: Embedding | None = None
) -> Lowered:
    """Dispatch to the lowering pass of the declaration's kind."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement '{placement}' (choose from {', '.join(PLACEMENTS)})")
    from lat.compiler.lower import automaton, machine, memory

    if placement == "weights":
        if isinstance(declaration, CheckedAutomaton):
            return automaton.lower_automaton(declaration)
        if isinstance(declaration, CheckedMemory):
            return _embedding_errors(memory.lower_memory, declaration, embedding, filename)
        return machine.lower_machine(declaration)
    # context: universal weights sized for this program, which binds as the prompt
    if isinstance(declaration, CheckedAutomaton):
        return automaton.lower_automaton_context(len(declaration.states),
                                                 len(declaration.alphabet))
    if isinstance(declaration, CheckedMemory):
        return _embedding_errors(memory.lower_memory_context_for, declaration, embedding,
                                 filename)
    return machine.lower_machine_context(len(declaration.states), len(declaration.tape),
                                         declaration.tape_cells)


def _embedding_errors(
    lower_fn: Callable[[CheckedMemory, Embedding], Lowered],
    declaration: CheckedMemory,
    embedding: Embedding | None,
    filename: str,
) -> Lowered:
    """Report a too-small random embedding at the declaration, as a program error."""
    from lat.compiler.lower.memory import EmbeddingTooSmall

    try:
        return lower_fn(declaration, embedding or Embedding())
    except EmbeddingTooSmall as exc:
        raise LatError(Diagnostic(filename, declaration.source.pos, str(exc),
                                  "raise --dim or use --embedding onehot")) from None


def assemble(lowered: Lowered, declaration: Checked, placement: str, text: str) -> CompiledModel:
    """Wrap lowered weights as an artifact with its compile report."""
    return CompiledModel(
        V=torch.from_numpy(lowered.V),
        Q=torch.from_numpy(lowered.Q),
        interface=lowered.interface,
        info={
            "program": declaration.name if placement == "weights" else "<universal>",
            "kind": _kind(declaration),
            "placement": placement,
            "decode_margin": lowered.decode_margin,
            "margin_note": lowered.margin_note,
            "source_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "origin": "compiled",
        },
    )


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _kind(declaration: Checked) -> str:
    return {CheckedAutomaton: "automaton", CheckedMemory: "memory",
            CheckedMachine: "machine"}[type(declaration)]


__all__ = ["Compilation", "LatError", "compile_source"]
