"""`.lat` text → runtime artifact. The whole pipeline, one pass per line (see `compile_source`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lat.compiler.check import check_program
from lat.compiler.errors import Diagnostic, LatError
from lat.compiler.ir import Checked, CheckedProgram
from lat.compiler.kinds import kind_of
from lat.compiler.lower import DEFAULT_MAX_MEMORY, Estimate, Lowered, estimate, format_bytes
from lat.compiler.parse import parse_program
from lat.runtime.errors import ArtifactError
from lat.runtime.storage import is_artifact

if TYPE_CHECKING:  # torch, numpy and the runtime load with the first compile, not for `check`
    from lat.compiler.lower.memory import Embedding
    from lat.runtime.model import CompiledModel

PLACEMENTS = ("weights", "context")


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


def read_source(path: str | Path) -> str:
    """A program file's text; a missing or unreadable file is one line, not a traceback.

    A leading UTF-8 byte order mark is dropped. An artifact given where a program is
    wanted, or a file that is neither, is refused in one line naming both possibilities.
    """
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory, not a .lat program")
    if is_artifact(path):
        raise ArtifactError(f"{path} is a lat artifact (safetensors), not a .lat program: "
                            "this command needs the program text")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: neither a .lat program (not UTF-8 text: byte "
                            f"{exc.start}) nor a lat artifact (no safetensors header)") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror or exc})") from None


def check_file(path: str | Path, max_memory: int | None = DEFAULT_MAX_MEMORY) -> CheckedProgram:
    """Parse and check a `.lat` file (errors are LatError with FILE:LINE:COL).

    Each declaration's compile size (weights placement) is estimated, and one above
    `max_memory` bytes is refused the way `compile` would refuse it (None: no limit).
    """
    checked = check_program(parse_program(read_source(path), str(path)))
    for declaration in checked.declarations:
        guard_size(declaration, "weights", str(path), max_memory)
    return checked


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
    if embedding is not None and embedding.kind != "onehot" and not kind_of(
            declaration).takes_embedding:
        raise LatError(Diagnostic(filename, declaration.source.pos,
                                  f"--embedding {embedding.kind} applies to memories only",
                                  f"'{declaration.name}' is {_a(kind_of(declaration).name)}: "
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
        from lat.compiler.bind import bind_program

        model = bind_program(executor, declaration)
    return Compilation(model=model, declaration=declaration, warnings=checked.warnings,
                       executor=executor)


def guard_size(declaration: Checked, placement: str, filename: str, max_memory: int | None,
               dim: int | None = None) -> Estimate:
    """The declaration's size estimate, or a LatError (at its bound or its name) when
    building it would need more than `max_memory` bytes."""
    sizes = estimate(declaration, placement, dim)
    if max_memory is not None and sizes.peak_bytes > max_memory:
        kind = kind_of(declaration)
        raise LatError(Diagnostic(
            filename, kind.size_at(declaration),
            f"{kind.name} '{declaration.name}' ({placement} placement) needs "
            f"{sizes.describe()}, above the --max-memory limit of {format_bytes(max_memory)}",
            "make the program smaller, or raise the limit on a machine that has the memory: "
            f"--max-memory {-(-sizes.peak_bytes // 1024**3)}G"))
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
    from lat.compiler.bind import bind_program

    return bind_program(model, declaration)


def minimise_declaration(declaration: Checked, filename: str) -> Checked:
    kind = kind_of(declaration)
    if kind.minimise is None:
        raise LatError(Diagnostic(filename, declaration.source.pos,
                                  "--minimise applies to automata only",
                                  f"'{declaration.name}' is {_a(kind.name)}"))
    return kind.minimise(declaration)


def lower(
    declaration: Checked, placement: str, filename: str, embedding: Embedding | None = None
) -> Lowered:
    """The lowering pass of the declaration's kind for `placement` (context: universal
    weights sized for this program, which binds as the prompt)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement '{placement}' (choose from {', '.join(PLACEMENTS)})")
    return kind_of(declaration).lowering(placement)(declaration, embedding, filename)


def assemble(lowered: Lowered, declaration: Checked, placement: str, text: str) -> CompiledModel:
    """Wrap lowered weights as an artifact with its compile report."""
    import torch

    from lat.runtime.model import CompiledModel

    return CompiledModel(
        V=torch.as_tensor(lowered.V),  # dense (numpy) or sparse (torch COO)
        Q=torch.as_tensor(lowered.Q),
        interface=lowered.interface,
        info={
            "program": declaration.name if placement == "weights" else "<universal>",
            "kind": kind_of(declaration).name,
            "placement": placement,
            "decode_margin": lowered.decode_margin,
            "margin_note": lowered.margin_note,
            "source_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "origin": "compiled",
        },
    )


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


__all__ = ["Compilation", "LatError", "check_file", "compile_source", "read_source"]
