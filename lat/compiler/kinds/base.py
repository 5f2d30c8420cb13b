"""What a program kind is: the `Kind` record every kind module fills in (docs/ARCHITECTURE.md,
"Adding a kind").

A kind is the set of functions that give one kind of declaration its meaning, from the
checker to the run report. Every place that used to ask "is this an automaton?" now asks
the registry (`lat.compiler.kinds.kind_of` / `kind_named`) for the kind and calls one of
these fields, so a new kind is one module filling in one `Kind`.

This module and the kind modules stay free of numpy and torch at import time (`lat check`
loads the registry); lowering, binding and readouts import what they need when called.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lat.runtime.errors import ArtifactError

if TYPE_CHECKING:
    from lat.compiler import ast
    from lat.compiler.check import Report
    from lat.compiler.interpret import Run
    from lat.compiler.ir import Checked
    from lat.compiler.lower import Estimate, Lowered
    from lat.compiler.lower.memory import Embedding
    from lat.runtime.execute import RunResult
    from lat.runtime.interface import Interface

    Lowering = Callable[[Checked, Embedding | None, str], Lowered]
else:
    Lowering = Callable


#: Below this many bytes of dense fp32 weights every lowering is dense (the sparse lowerings
#: start far above: tests/test_kinds.py), so a kind's estimate of a small program is its
#: dense arithmetic and `lat check` never loads the lowering modules (numpy, torch).
ALWAYS_DENSE_BYTES = 1 << 20


class UnknownKind(ArtifactError):
    """An artifact whose `interface.kind` no registered kind claims (made by another version
    of lat, or edited): refused in one line like any other artifact it cannot run."""


@dataclass(frozen=True)
class StepBound:
    """The most steps a run can take, and the words that say why (for a refusal)."""

    steps: int
    why: str


@dataclass(frozen=True)
class Kind:
    """Everything one program kind means, as functions over its AST and checked forms.

    Front end: `check` turns the AST node into the checked form (or reports and returns
    None); `format` writes the node back as canonical lines, from its opening line to its
    last body line (printer.py closes the brace). Semantics: `interpret` is the reference
    interpreter. Back end: `estimate` sizes a compile without allocating, `lower` maps each
    placement ("weights", "context") to its lowering, `bind` puts a program into a context
    executor's interface. Face: `readout` turns a run into the report's kind-specific
    fields, `expected` is what the interpreter says those fields must be,
    `verify_inputs`/`longest_input` are `lat verify`'s domain and `worst_case_steps` the
    longest run a model can make.
    """

    name: str
    syntax: type  # the AST node (ast.Automaton, ...)
    checked: type  # the checked form (ir.CheckedAutomaton, ...)
    check: Callable[[Any, Report], Checked | None]
    format: Callable[[Any], list[str]]
    interpret: Callable[[Any, Sequence[str] | str], Run]
    estimate: Callable[[Any, str, int | None], Estimate]
    lower: Mapping[str, Lowering]
    bind: Callable[[Interface, Any], Interface]
    readout: Callable[[Interface, RunResult], dict[str, object]]
    expected: Callable[[Any, tuple[str, ...]], dict[str, object]]
    verify_inputs: Callable[[Any, int, int, int], tuple[list[tuple[str, ...]], str]]
    longest_input: Callable[[Any, int], int]
    worst_case_steps: Callable[[Interface, int], StepBound]
    #: the keyword arguments and defaults of its `lat.testing` source strategy, by name
    #: (the compiler never imports Hypothesis)
    source_strategy: str
    strategy_defaults: Mapping[str, int] = field(default_factory=dict)
    #: an interface whose runs stop after a number of steps, or None when it cannot be capped
    cap_steps: Callable[[Interface, int], Interface | None] | None = None
    #: for a kind whose verify domain is fixed (not chosen by length), what it checks
    fixed_verify_domain: str | None = None
    takes_embedding: bool = False  # whether --embedding/--dim/--seed apply
    #: where a size refusal points (the declaration, or e.g. a machine's `bound:`)
    size_at: Callable[[Any], ast.Pos] = field(default=lambda declaration: declaration.source.pos)
    state_graph: Callable[[Any], Any] | None = None  # networkx graph, for state-based kinds
    minimise: Callable[[Any], Any] | None = None
    to_dot: Callable[[Any], str] | None = None

    def lowering(self, placement: str) -> Lowering:
        """The lowering for `placement`; ValueError naming the placements for another."""
        try:
            return self.lower[placement]
        except KeyError:
            raise ValueError(f"unknown placement '{placement}' for a {self.name} (choose "
                             f"from {', '.join(self.lower)})") from None


def verify_words(
    alphabet: Sequence[str], max_len: int, samples: int, seed: int = 0
) -> tuple[list[tuple[str, ...]], str]:
    """Every word up to `max_len` when there are at most `samples`, else `samples` random ones.

    Random words take a uniform length in 0..max_len, then uniform symbols, so short words
    are not drowned by the (far more numerous) long ones.
    """
    k = len(alphabet)
    total = sum(k**n for n in range(max_len + 1))
    if total <= samples:
        words = [w for n in range(max_len + 1) for w in itertools.product(alphabet, repeat=n)]
        return words, "exhaustive"
    import numpy as np  # only a sampled domain needs it

    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, size=samples)
    words = [tuple(alphabet[i] for i in rng.integers(0, k, size=n)) for n in lengths]
    return words, "sampled"


def report_fields(run: object, keys: Sequence[str]) -> dict[str, object]:
    """The report fields `keys` read off an interpreter run, tuples as lists (as JSON has)."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in ((key, getattr(run, key)) for key in keys)}
