"""Diagnostics carrying `FILE:LINE:COL`, the only way the front end reports a mistake."""

from __future__ import annotations

import difflib
import unicodedata
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
        text = (f"{one_line(self.filename)}:{self.pos.line}:{self.pos.col}: {self.severity}: "
                f"{one_line(self.message)}")
        if self.hint:
            text += f"\n  hint: {one_line(self.hint)}"
        return text


def one_line(text: str) -> str:
    """`text` with line breaks and other control or format characters escaped (\\n, \\x00,
    \\u202e ...), so a message naming user text stays one line and shows what was typed."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() or char == " "
                   or unicodedata.category(char) == "Zs"
                   else repr(char)[1:-1] for char in text)


class LatError(Exception):
    """A user mistake in a `.lat` program: never a crash, always a located message."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest known name, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
