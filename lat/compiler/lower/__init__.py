"""Lowering passes: one module per program kind, each `lower_<kind>(checked) -> Lowered`."""

from __future__ import annotations

from dataclasses import dataclass

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
