"""The decompiler's report: what was read, the program it gives, how it compares; and the
header comment that says so in the program (docs/ARCHITECTURE.md, "The face")."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field

from lat.compiler.ir import Checked


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

    def inconsistency_lines(self, limit: int = 20) -> list[str]:
        """The first `limit` inconsistent entries as text: each value seen, how often, and
        an example input (what `lat decompile` prints for a model it cannot decompile)."""
        lines = []
        for entry in self.inconsistent[:limit]:
            seen = "; ".join(f"{json.dumps(s['value'])} ×{s['readings']} "
                             f"(e.g. {json.dumps(s['examples'][0] if s['examples'] else {})})"
                             for s in entry["seen"])
            lines.append(f"  {entry['entry']}: {entry['why']}: {seen}")
        return lines

    def comparison_lines(self, limit: int = 20) -> list[str]:
        """The comparison with the reference as text: the verdict, the first `limit`
        differing entries and a distinguishing input (empty when nothing was compared)."""
        if self.equivalent_to_reference is None:
            return []
        verdict = "equivalent to" if self.equivalent_to_reference else "DIFFERS from"
        lines = [f"{verdict} {self.reference}: {self.comparison}"]
        lines += [f"  {difference['entry']}: model {json.dumps(difference['model'])}, "
                  f"reference {json.dumps(difference['reference'])}"
                  for difference in (self.differences or [])[:limit]]
        if self.distinguishing_input is not None:
            lines.append(f"  distinguishing input: {json.dumps(self.distinguishing_input)}")
        return lines

    def to_json(self) -> dict[str, object]:
        """The `lat decompile --json` object."""
        report: dict[str, object] = {
            "kind": self.kind,
            "program": self.program,
            "consistent": self.consistent,
            "min_margin": finite(self.min_margin),
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


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def comment_lines(text: str) -> list[str]:
    """A header comment wrapped to 100 columns, continuation lines indented."""
    lines = textwrap.wrap(text, 96, subsequent_indent="  ", break_on_hyphens=False)
    return [f"# {line}" for line in lines]


def proof_lines(report: Decompilation) -> list[str]:
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
