"""`.lat` text → runtime artifact. The whole pipeline, one pass per line (see `compile_source`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from lat.compiler.check import check_program
from lat.compiler.errors import Diagnostic, LatError
from lat.compiler.ir import CheckedAutomaton, CheckedMachine, CheckedMemory
from lat.compiler.lower import Lowered
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


def compile_source(
    text: str,
    filename: str = "<string>",
    *,
    name: str | None = None,
    placement: str = "weights",
    minimise: bool = False,
) -> Compilation:
    """Compile one declaration of a `.lat` source to an MHLA artifact."""
    program = parse_program(text, filename)
    checked = check_program(program)
    declaration = checked.get(name)
    if minimise:
        declaration = minimise_declaration(declaration, filename)
    lowered = lower(declaration, placement, filename)
    model = assemble(lowered, declaration, placement, text)
    return Compilation(model=model, declaration=declaration, warnings=checked.warnings)


def minimise_declaration(declaration: Checked, filename: str) -> Checked:
    from lat.compiler.graph import minimise

    if not isinstance(declaration, CheckedAutomaton):
        raise _unsupported(declaration, filename, "--minimise applies to automata only")
    return minimise(declaration)


def lower(declaration: Checked, placement: str, filename: str) -> Lowered:
    """Dispatch to the lowering pass of the declaration's kind."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement '{placement}' (choose from {', '.join(PLACEMENTS)})")
    if isinstance(declaration, CheckedAutomaton) and placement == "weights":
        from lat.compiler.lower.automaton import lower_automaton

        return lower_automaton(declaration)
    raise _unsupported(
        declaration, filename,
        f"{_kind(declaration)} declarations with --program-in {placement} are not supported yet",
    )


def assemble(lowered: Lowered, declaration: Checked, placement: str, text: str) -> CompiledModel:
    """Wrap lowered weights as an artifact with its compile report."""
    return CompiledModel(
        V=torch.from_numpy(lowered.V),
        Q=torch.from_numpy(lowered.Q),
        interface=lowered.interface,
        info={
            "program": declaration.name,
            "kind": _kind(declaration),
            "placement": placement,
            "decode_margin": lowered.decode_margin,
            "margin_note": lowered.margin_note,
            "source_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "origin": "compiled",
        },
    )


def _kind(declaration: Checked) -> str:
    return {CheckedAutomaton: "automaton", CheckedMemory: "memory",
            CheckedMachine: "machine"}[type(declaration)]


def _unsupported(declaration: Checked, filename: str, message: str) -> LatError:
    source = declaration.source
    return LatError(Diagnostic(filename, source.pos, message,
                               "automata compile with --program-in weights today"))


__all__ = ["Compilation", "LatError", "compile_source"]
