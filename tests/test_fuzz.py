"""Hostile text at the edges: whatever a user types, `lat` answers in one line, never a
traceback, and prints user text literally (no rich markup, no emoji codes, no raw control
characters).

Budgets: the `ci`/`dev` Hypothesis profiles keep this file to a few seconds; the long local
profile is `HYPOTHESIS_PROFILE=fuzz` (see `FUZZ_EXAMPLES` below; counts in the README).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lat.cli import main
from lat.compiler.errors import one_line
from lat.compiler.printer import format_symbol

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
FUZZ_EXAMPLES = int(os.environ.get("LAT_FUZZ_EXAMPLES", "10000")) if LONG else 30
fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Text a person or an attacker might type: markup, emoji codes, control characters, unicode.
HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["[/x]", "[/]", "[red]hidden[/red]", "[bold]x", ":smile:", "\x1b[2J",
                     "a\nb", "\r", "\x00", "\u202e", "\ufeff", "[link=http://x]y[/link]"]),
    st.lists(st.sampled_from(["[", "]", "/", ":", "red", "bold", "\n", "\\", " ", "a", "é"]),
             max_size=12).map("".join),
)


def lat(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean(code: int, out: str, err: str, codes=(0, 1, 2)) -> None:
    assert code in codes, (code, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    if code != 0:
        assert lines, "a failure says why"
        assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: ")), err


@fuzz
@given(text=HOSTILE)
def test_run_echoes_any_input_literally(capsys, text):
    """A memory takes the whole text as one key: it is echoed as typed, never as markup."""
    code, out, err = lat(capsys, "run", str(PROGRAMS / "capitals.lat"), "--input", text)
    assert_clean(code, out, err)
    assert code == 0  # capitals has a default: every key has an answer
    assert one_line(repr(text)) in out
    assert out.count("\n") == 2  # the echo line and the output line


@fuzz
@given(text=HOSTILE)
def test_values_and_inputs_are_printed_literally(tmp_path_factory, capsys, text):
    """A memory whose value is hostile text prints it as written (escaped controls only)."""
    path = tmp_path_factory.mktemp("v") / "m.lat"
    value = text or "v"
    path.write_text(f"memory m {{\n  k -> {format_symbol(value)}\n  default: d\n}}\n",
                    encoding="utf-8")
    code, out, err = lat(capsys, "check", str(path))
    if code == 2:  # e.g. a value the grammar cannot hold: a located error, not a crash
        assert_clean(code, out, err)
        return
    assert_clean(code, out, err, codes=(0,))
    code, out, err = lat(capsys, "run", str(path), "--input", "k")
    assert_clean(code, out, err, codes=(0,))
    assert f"output: {one_line(value)}" in out
    code, out, err = lat(capsys, "run", str(path), "--input", "k", "--json")
    assert code == 0 and json.loads(out)["output"] == value
    artifact = path.with_suffix(".safetensors")
    assert lat(capsys, "compile", str(path), "-o", str(artifact))[0] == 0
    code, out, err = lat(capsys, "inspect", str(artifact))
    assert_clean(code, out, err, codes=(0,))


@fuzz
@given(text=HOSTILE)
def test_automaton_input_errors_are_one_literal_line(capsys, text):
    code, out, err = lat(capsys, "run", str(PROGRAMS / "parity.lat"), "--input", text)
    assert_clean(code, out, err, codes=(0, 1))
    if code == 1:
        assert err.startswith("lat: error: ")


@pytest.mark.parametrize("text", ["[/x]", "[red]hidden[/red]", ":smile:", "[bold]x"])
def test_markup_is_echoed(capsys, text):
    code, out, _ = lat(capsys, "run", str(PROGRAMS / "capitals.lat"), "--input", text)
    assert code == 0 and repr(text) in out
