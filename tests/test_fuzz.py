"""Hostile text at the edges: whatever a user types, `lat` answers in one line, never a
traceback, and prints user text literally (no rich markup, no emoji codes, no raw control
characters).

Budgets: 25 examples per test keep this file to a few seconds; the long local profile is
`LAT_FUZZ=long` (10,000 examples per test, or `LAT_FUZZ_EXAMPLES`; counts in the README).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lat.cli import main
from lat.compiler.errors import one_line
from lat.compiler.printer import format_symbol

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"

LONG = os.environ.get("LAT_FUZZ") == "long"
FUZZ_EXAMPLES = int(os.environ.get("LAT_FUZZ_EXAMPLES", "10000")) if LONG else 25
# The long profile reports a failure as found (shrinking 200,000-character programs takes
# longer than the search); the short one shrinks as usual.
fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not LONG,
                phases=[Phase.explicit, Phase.reuse, Phase.generate] if LONG else list(Phase),
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])

# Text a person or an attacker might type: markup, emoji codes, control characters, unicode.
# Given as `--input=TEXT`, the form that takes any text, a leading '-' included (argparse
# reads `--input -x` as a second option); '-' alone means standard input, so it is left out.
HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["[/x]", "[/]", "[red]hidden[/red]", "[bold]x", ":smile:", "\x1b[2J",
                     "a\nb", "\r", "\x00", "\u202e", "\ufeff", "[link=http://x]y[/link]"]),
    st.lists(st.sampled_from(["[", "]", "/", ":", "red", "bold", "\n", "\\", " ", "a", "é"]),
             max_size=12).map("".join),
).filter(lambda text: text != "-")


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
    code, out, err = lat(capsys, "run", str(PROGRAMS / "capitals.lat"), f"--input={text}")
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
    code, out, err = lat(capsys, "run", str(PROGRAMS / "parity.lat"), f"--input={text}")
    assert_clean(code, out, err, codes=(0, 1))
    if code == 1:
        assert err.startswith("lat: error: ")


@pytest.mark.parametrize("text", ["[/x]", "[red]hidden[/red]", ":smile:", "[bold]x"])
def test_markup_is_echoed(capsys, text):
    code, out, _ = lat(capsys, "run", str(PROGRAMS / "capitals.lat"), f"--input={text}")
    assert code == 0 and repr(text) in out


# -- mutated programs ------------------------------------------------------------------------
#
# Each example takes a shipped program and applies 1–3 mutations of these kinds; the file is
# then checked (and, when it checks, compiled and run). Whatever comes out: exit 0, 1 or 2,
# no exception escapes `main`, at most one line plus a hint, and exit 2 is FILE:LINE:COL.

SHIPPED = sorted(PROGRAMS.glob("*.lat"))
SOURCES = {path.name: path.read_text(encoding="utf-8") for path in SHIPPED}
TOKENS = ["->", "{", "}", ":", ",", "|", "*", '"', "#", "automaton", "memory", "machine",
          "states", "start", "accept", "alphabet", "tape", "blank", "halt", "bound", "steps",
          "default", "L", "R", "S", "q", "0", "1", "_", '"a b"', '"\\n"', "é", "λ", "\x00",
          "\ufeff", "\u202e", "99999999999999999999999", "-1", "=>", "[red]x[/red]", ":smile:"]
MUTATIONS = ("delete_line", "duplicate_line", "swap_lines", "insert_token", "delete_token",
             "replace_token", "truncate", "insert_unicode", "long_name", "nul", "crlf", "cr",
             "bad_utf8", "bom", "huge_number", "blank_lines", "join_lines", "shuffle_words",
             "drop_brace", "reserved_word", "huge_bound")


@st.composite
def mutated_programs(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SOURCES)))
    text = SOURCES[name]
    raw: bytes | None = None
    for kind in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        lines = text.split("\n")
        at = draw(st.integers(0, max(len(lines) - 1, 0)))
        words = text.split(" ")
        spot = draw(st.integers(0, len(text)))
        if kind == "delete_line" and lines:
            del lines[at]
        elif kind == "duplicate_line" and lines:
            lines.insert(at, lines[at])
        elif kind == "swap_lines" and len(lines) > 1:
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "insert_token":
            text = text[:spot] + " " + draw(st.sampled_from(TOKENS)) + " " + text[spot:]
        elif kind == "delete_token" and len(words) > 1:
            del words[draw(st.integers(0, len(words) - 1))]
            text = " ".join(words)
        elif kind == "replace_token" and len(words) > 1:
            words[draw(st.integers(0, len(words) - 1))] = draw(st.sampled_from(TOKENS))
            text = " ".join(words)
        elif kind == "truncate":
            text = text[:spot]
        elif kind == "insert_unicode":
            text = text[:spot] + draw(st.text(min_size=1, max_size=4)) + text[spot:]
        elif kind == "long_name":
            text = text[:spot] + " " + "n" * draw(st.sampled_from([300, 200_000])) + text[spot:]
        elif kind == "nul":
            text = text[:spot] + "\x00" + text[spot:]
        elif kind == "crlf":
            text = text.replace("\n", "\r\n")
        elif kind == "cr":
            text = text.replace("\n", "\r")
        elif kind == "bad_utf8":  # the last mutation: the file is bytes from here on
            raw = text.encode("utf-8")
            bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
            raw = raw[:spot] + bad + raw[spot:]
            break
        elif kind == "bom":
            text = "\ufeff" + text
        elif kind == "huge_number":
            text = text[:spot] + " 1" + "0" * draw(st.integers(10, 400)) + " " + text[spot:]
        elif kind == "blank_lines":
            lines.insert(at, "\n" * draw(st.sampled_from([3, 100_000])))
        elif kind == "join_lines":
            text = text.replace("\n", " ")
        elif kind == "shuffle_words" and len(words) > 2:
            words = draw(st.permutations(words))
            text = " ".join(words)
        elif kind == "drop_brace":
            text = text.replace(draw(st.sampled_from(["{", "}"])), "", 1)
        elif kind == "reserved_word":
            text = text.replace("q", draw(st.sampled_from(["states", "start", "tape"])), 1)
        elif kind == "huge_bound":
            text = text.replace("bound: steps", "bound: steps 1000000000 , tape 100000 #", 1)
        if kind in ("delete_line", "duplicate_line", "swap_lines", "blank_lines"):
            text = "\n".join(lines)
    return name, raw if raw is not None else text.encode("utf-8")


LOCATED = re.compile(r"^.+:\d+:\d+: error: ")


@fuzz
@given(program=mutated_programs())
def test_mutated_programs_never_crash(tmp_path_factory, capsys, program):
    name, data = program
    path = tmp_path_factory.mktemp("m") / name
    path.write_bytes(data)
    code, out, err = lat(capsys, "check", str(path))
    assert_clean(code, out, err)
    if code == 2:
        assert LOCATED.match(err), err
        assert err.startswith(str(path))
    if code != 0:
        return
    artifact = path.with_suffix(".safetensors")
    code, out, err = lat(capsys, "compile", str(path), "-o", str(artifact), "--name",
                         _first_declaration(out))
    assert_clean(code, out, err)
    if code == 0:
        code, out, err = lat(capsys, "run", str(artifact), "--input", "")
        assert_clean(code, out, err, codes=(0, 1))


def _first_declaration(check_output: str) -> str:
    """The name after the first kind in `FILE: ok (kind name, ...)`."""
    listed = check_output.rsplit("(", 1)[1].split(",")[0]
    return listed.split()[1].rstrip(")")


# -- inputs to the shipped programs ----------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shipped")
    made = {}
    for path in SHIPPED:
        target = folder / path.with_suffix(".safetensors").name
        assert main(["compile", str(path), "-o", str(target)]) == 0
        made[path.stem] = target
    return made


INPUT_TEXT = st.one_of(
    HOSTILE,
    st.text(alphabet="01ab_xcl r()+=", max_size=40),
    st.lists(st.sampled_from(["0", "1", "a", "b", "c", "x", "_", "+", "=", " ", "l", "r"]),
             max_size=60).map("".join),
)


@fuzz
@given(name=st.sampled_from([path.stem for path in SHIPPED]), text=INPUT_TEXT,
       json_output=st.booleans())
def test_any_input_to_any_shipped_program(artifacts, capsys, name, text, json_output):
    argv = ["run", str(artifacts[name]), f"--input={text}"] + (["--json"] * json_output)
    code, out, err = lat(capsys, *argv)
    assert_clean(code, out, err, codes=(0, 1))
    if code == 1:
        assert err.startswith("lat: error: ") and len(err.strip().splitlines()) == 1
    elif json_output:
        report = json.loads(out)
        assert report["input"] == ([text] if report["kind"] == "memory" else
                                   report["input"])
    else:
        assert out.count("\n") in (2, 3, 4)
