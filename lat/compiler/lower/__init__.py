"""Lowering passes: one module per program kind, each `lower_<kind>(checked) -> Lowered`.

Which lowering a declaration takes is its kind's (`lat.compiler.kinds`); this package
holds what they share: `Lowered`, the size `Estimate` and byte formatting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy stays unimported for `lat check` (sizes are plain arithmetic)
    import numpy as np

    from lat.runtime.interface import Interface


@dataclass(frozen=True)
class Lowered:
    """Weights and interface of one program, before they become an artifact.

    `decode_margin` is a proven lower bound on top-1 minus top-2 over every input of the
    program's domain; `margin_note` says why it holds.
    """

    V: np.ndarray  # (H, d_out, d)
    Q: np.ndarray  # (H, d, d)
    interface: Interface
    decode_margin: float
    margin_note: str


#: The default of `--max-memory`: a compile whose estimated peak is above it is refused.
DEFAULT_MAX_MEMORY = 2 * 1024**3


@dataclass(frozen=True)
class Estimate:
    """What lowering a declaration will allocate, computed from its sizes alone (no arrays).

    `weight_bytes` is V and Q in fp32; `peak_bytes` adds the lowering's working set (a
    memory's margin check builds K×K float64 Gram matrices) and the copies a save makes.
    `worst_case_steps` is the longest run: a machine's step bound, one lookup for a memory,
    None for an automaton (one step per input symbol).
    """

    heads: int
    d: int
    d_out: int
    weight_bytes: int
    peak_bytes: int
    worst_case_steps: int | None

    def describe(self) -> str:
        return (f"H={self.heads}, d={self.d:,}, d_out={self.d_out:,}: "
                f"{format_bytes(self.weight_bytes)} of weights, about "
                f"{format_bytes(self.peak_bytes)} to build")

    @classmethod
    def of(cls, heads: int, d: int, d_out: int, working: int, steps: int | None) -> Estimate:
        """The estimate of fp32 weights of these shapes plus `working` bytes of scratch."""
        weights = 4 * heads * (d_out * d + d * d)
        return cls(heads, d, d_out, weights, 3 * weights + working, steps)

    def to_json(self) -> dict[str, object]:
        return {"heads": self.heads, "d": self.d, "d_out": self.d_out,
                "weight_bytes": self.weight_bytes, "peak_bytes": self.peak_bytes,
                "worst_case_steps": self.worst_case_steps}


def estimate(declaration: object, placement: str = "weights", dim: int | None = None) -> Estimate:
    """The sizes `lower` would produce for `declaration`, from its kind (tested equal on
    every kind)."""
    from lat.compiler.kinds import kind_of

    return kind_of(declaration).estimate(declaration, placement, dim)


def format_bytes(count: float) -> str:
    """1536 → '1.5 KiB'; binary units, three significant figures (exact for any int)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    for power, unit in enumerate(units):
        if count < 1024 ** (power + 1) or unit == "PiB":
            if unit == "B":
                return f"{count} B"
            whole, rest = divmod(int(count), 1024**power)
            if whole < 10**15:
                return f"{whole + rest / 1024**power:.3g} {unit}"
            digits = str(whole)  # beyond a float's range: mantissa and exponent by hand
            return f"{digits[0]}.{digits[1:3]}e+{len(digits) - 1} PiB"
    raise AssertionError("unreachable")  # pragma: no cover


def parse_bytes(text: str) -> int:
    """'2G', '512M', '1.5GiB', '1000000' → bytes (K, M, G, T are powers of 1024)."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    factor = 1
    if cleaned and cleaned[-1] in "KMGT":
        factor = 1024 ** ("KMGT".index(cleaned[-1]) + 1)
        cleaned = cleaned[:-1]
    value = float(cleaned)  # ValueError for anything else
    if not value > 0 or value * factor > 2**62:
        raise ValueError(f"not a usable size: {text!r}")
    return int(value * factor)
