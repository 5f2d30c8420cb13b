"""Give a context-placement artifact its program: the table goes into the prompt.

The universal executor's weights stay as they are; only the Interface changes — the
program's names take the executor's slots (embeddings are by slot, so renaming does not
touch the weights) and the program's table becomes the prompt prefix.
"""

from __future__ import annotations

import dataclasses

from lat.compiler.ir import CheckedAutomaton, CheckedMachine, CheckedMemory
from lat.runtime.errors import InputError
from lat.runtime.model import CompiledModel


def bind_program(
    model: CompiledModel, declaration: CheckedAutomaton | CheckedMemory | CheckedMachine
) -> CompiledModel:
    """The artifact `model` (context placement) set up to execute `declaration`."""
    from lat.compiler.lower.automaton import bind_automaton
    from lat.compiler.lower.machine import bind_machine
    from lat.compiler.lower.memory import bind_memory

    interface = model.interface
    if interface.extra.get("placement") != "context":
        raise InputError("this artifact holds its program in its weights; --program is for "
                         "artifacts compiled with --program-in context")
    binders = {CheckedAutomaton: ("automaton", bind_automaton),
               CheckedMemory: ("memory", bind_memory),
               CheckedMachine: ("machine", bind_machine)}
    kind, binder = binders[type(declaration)]
    if interface.kind != kind:
        article = "an" if kind[:1] in "aeiou" else "a"
        raise InputError(f"this artifact executes {interface.kind} programs, "
                         f"not {article} {kind} like '{declaration.name}'")
    try:
        bound = binder(interface, declaration)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return dataclasses.replace(model, interface=bound,
                               info={**model.info, "bound_program": declaration.name})
