"""Give a context-placement artifact its program: the table goes into the prompt.

The universal executor's weights stay as they are; only the Interface changes — the
program's names take the executor's slots (embeddings are by slot, so renaming does not
touch the weights) and the program's table becomes the prompt prefix.
"""

from __future__ import annotations

import dataclasses

from lat.compiler.ir import Checked
from lat.compiler.kinds import kind_of
from lat.runtime.errors import InputError
from lat.runtime.model import CompiledModel


def bind_program(model: CompiledModel, declaration: Checked) -> CompiledModel:
    """The artifact `model` (context placement) set up to execute `declaration`, by the
    binding of the declaration's kind."""
    interface = model.interface
    if interface.extra.get("placement") != "context":
        raise InputError("this artifact holds its program in its weights; --program is for "
                         "artifacts compiled with --program-in context")
    kind = kind_of(declaration)
    if interface.kind != kind.name:
        article = "an" if kind.name[:1] in "aeiou" else "a"
        raise InputError(f"this artifact executes {interface.kind} programs, "
                         f"not {article} {kind.name} like '{declaration.name}'")
    try:
        bound = kind.bind(interface, declaration)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return dataclasses.replace(model, interface=bound,
                               info={**model.info, "bound_program": declaration.name})
