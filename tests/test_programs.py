"""The example programs in programs/ compute what their opening comments say.

Every program parses and checks with no warning. Every machine is run by the reference
interpreter on every valid input up to a length (for most, every input that fits its tape)
and compared with a plain-Python statement of what it computes; a run that fits must halt
(never `step_limit` or `out_of_tape`) within the machine's step bound, except `busy`, which
must hit the step limit on every input. The memory is compared with a plain reading of its
own text.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lat.compiler.check import check_program
from lat.compiler.interpret import MachineRun, run_machine, run_memory
from lat.compiler.ir import CheckedMachine, CheckedMemory, CheckedProgram
from lat.compiler.parse import parse_program
from lat.runtime.errors import InputError

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
MACHINES = ("increment", "add", "palindrome", "unary_mul", "busy")
ALL = ("capitals", *MACHINES)

# These machines are compiled into attention weights whose size grows with
# states x tape symbols x cells, so each stays small.
MAX_STATES_TIMES_SYMBOLS = 50


@functools.cache
def checked(stem: str) -> CheckedProgram:
    path = PROGRAMS / f"{stem}.lat"
    return check_program(parse_program(path.read_text(encoding="utf-8"), path.name))


def machine(stem: str) -> CheckedMachine:
    declaration = checked(stem).get(stem)
    assert isinstance(declaration, CheckedMachine)
    return declaration


def words(alphabet: str, max_len: int, min_len: int = 0) -> Iterator[str]:
    for n in range(min_len, max_len + 1):
        for letters in itertools.product(alphabet, repeat=n):
            yield "".join(letters)


def halts(m: CheckedMachine, word: str) -> MachineRun:
    """Run `word` (one character per symbol), which must halt within the bound."""
    run = run_machine(m, list(word))
    assert run.status == "halted", f"{m.name} on {word!r}: {run.status} after {run.steps}"
    assert run.steps <= m.max_steps
    return run


def lsb_first(value: int) -> str:
    """`value` in binary, least significant bit first, no high zeros ("0" for 0)."""
    return format(value, "b")[::-1]


def lsb_value(bits: str) -> int:
    return int(bits[::-1] or "0", 2)


# --------------------------------------------------------------------------- all programs


@pytest.mark.parametrize("stem", ALL)
def test_program_checks_cleanly(stem: str) -> None:
    text = (PROGRAMS / f"{stem}.lat").read_text(encoding="utf-8")
    assert text.startswith("#"), "each program begins with a comment saying what it computes"
    program = checked(stem)
    assert program.warnings == ()
    assert program.names == (stem,)


@pytest.mark.parametrize("stem", MACHINES)
def test_machine_is_small(stem: str) -> None:
    m = machine(stem)
    assert len(m.states) * len(m.tape) <= MAX_STATES_TIMES_SYMBOLS


@pytest.mark.parametrize("stem", MACHINES)
def test_machine_rejects_long_input_and_blank(stem: str) -> None:
    m = machine(stem)
    symbol = next(s for s in m.tape if s != m.blank)
    with pytest.raises(InputError):
        run_machine(m, [symbol] * (m.tape_cells + 1))
    with pytest.raises(InputError):
        run_machine(m, [symbol, m.blank, symbol])


@pytest.mark.parametrize(("stem", "word", "output"), [
    ("increment", "1101", "0011"),
    ("increment", "111", "0001"),
    ("add", "101+11", "0001"),
    ("add", "1+1", "01"),
    ("add", "0+0", "0"),
    ("add", "10+", "1"),
    ("unary_mul", "111x11", "111111"),
    ("unary_mul", "1x", ""),
    ("palindrome", "ab", "_b"),
])
def test_documented_examples(stem: str, word: str, output: str) -> None:
    assert halts(machine(stem), word).output == output


# --------------------------------------------------------------------------- capitals


def test_capitals_is_its_table_with_a_default() -> None:
    memory = checked("capitals").get("capitals")
    assert isinstance(memory, CheckedMemory)
    text = (PROGRAMS / "capitals.lat").read_text(encoding="utf-8")
    table = {key: value.strip('"') for key, value in
             re.findall(r"^\s*([a-z_]+) -> (\w+|\"[^\"]*\")\s*$", text, re.MULTILINE)}
    assert len(table) >= 50
    assert dict(memory.table) == table
    for key, value in table.items():
        assert run_memory(memory, key).output == value
    assert run_memory(memory, "france").output == "paris"
    assert run_memory(memory, "india").output == "new delhi"
    assert run_memory(memory, "new_zealand").output == "wellington"
    for absent in ("atlantis", "France", "paris", "new zealand", ""):
        assert run_memory(memory, absent).output == "unknown"


# --------------------------------------------------------------------------- increment


def test_increment_on_every_input_that_fits() -> None:
    m = machine("increment")
    for word in words("01", m.tape_cells):
        if word == "1" * m.tape_cells:  # the sum needs a 17th cell
            assert run_machine(m, list(word)).status == "out_of_tape"
            continue
        run = halts(m, word)
        assert run.output == lsb_first(lsb_value(word) + 1).ljust(len(word), "0"), word


# --------------------------------------------------------------------------- add


def sums(max_len: int) -> Iterator[str]:
    """Every word a+b over {0, 1} of at most `max_len` symbols."""
    for n in range(1, max_len + 1):
        for bits in itertools.product("01", repeat=n - 1):
            for p in range(n):
                yield "".join(bits[:p]) + "+" + "".join(bits[p:])


def added(word: str) -> str:
    a, b = word.split("+")
    return lsb_first(lsb_value(a) + lsb_value(b))


def test_add_on_every_input_up_to_12_symbols() -> None:
    m = machine("add")
    for word in sums(12):
        assert halts(m, word).output == added(word), word


def test_add_on_the_longest_inputs_that_fit() -> None:
    m = machine("add")
    n = m.tape_cells - 1
    for bit in "01":
        for p in range(n):  # all zeros split evenly is the slowest input
            word = bit * p + "+" + bit * (n - 1 - p)
            assert halts(m, word).output == added(word), word


@given(st.lists(st.sampled_from("01"), max_size=22), st.data())
def test_add_on_random_long_inputs(bits: list[str], data: st.DataObject) -> None:
    p = data.draw(st.integers(0, len(bits)))
    word = "".join(bits[:p]) + "+" + "".join(bits[p:])
    assert halts(machine("add"), word).output == added(word)


# --------------------------------------------------------------------------- palindrome


def test_palindrome_on_every_input_that_fits() -> None:
    m = machine("palindrome")
    for word in words("ab", m.tape_cells - 1):
        run = halts(m, word)
        assert run.final_state == ("yes" if word == word[::-1] else "no"), word
        if word == word[::-1]:
            assert run.output == ""


# --------------------------------------------------------------------------- unary_mul


def fits_unary_mul(m: int, n: int, cells: int) -> bool:
    return m * n + m + 2 <= cells and m + n + 2 <= cells


def test_unary_mul_on_every_input_that_fits() -> None:
    machine_ = machine("unary_mul")
    cells = machine_.tape_cells
    fitting = 0
    for m in range(cells):
        for n in range(cells - m):
            word = "1" * m + "x" + "1" * n
            if fits_unary_mul(m, n, cells):
                assert halts(machine_, word).output == "1" * (m * n), word
                fitting += 1
            else:  # the documented limit is exact: these do not halt in the bound
                assert run_machine(machine_, list(word)).status != "halted", word
    assert fitting > 100


# --------------------------------------------------------------------------- busy


def test_busy_hits_the_step_limit_on_every_input() -> None:
    m = machine("busy")
    for word in words("01", m.tape_cells):
        run = run_machine(m, list(word))
        assert run.status == "step_limit", word
        assert run.steps == m.max_steps
