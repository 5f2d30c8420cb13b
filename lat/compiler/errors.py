"""Diagnostics carrying `FILE:LINE:COL`, the only way the front end reports a mistake."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from lat.compiler.ast import Pos


@dataclass(frozen=True)
class Diagnostic:
    """One message about a place in a source file."""

    filename: str
    pos: Pos
    message: str
    hint: str | None = None
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        text = f"{self.filename}:{self.pos.line}:{self.pos.col}: {self.severity}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class LatError(Exception):
    """A user mistake in a `.lat` program: never a crash, always a located message."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest known name, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
