"""Reference interpreters: the semantics of DESIGN.md §3, checked on small hand cases and
against independent re-statements of what each shipped program computes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lat.compiler.check import check_program
from lat.compiler.interpret import (
    AutomatonRun,
    MachineRun,
    MemoryRun,
    run,
    run_automaton,
    run_machine,
    run_memory,
)
from lat.compiler.ir import Checked
from lat.compiler.parse import parse_program
from lat.runtime.errors import InputError
from lat.testing import automaton_sources, words

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


def load(text: str, name: str | None = None) -> Checked:
    return check_program(parse_program(text)).get(name)


def program(stem: str) -> Checked:
    return load((PROGRAMS / f"{stem}.lat").read_text(encoding="utf-8"))


def machine(rules: str, *, tape: str = "0, 1, _", steps: int = 20, cells: int = 4,
            states: str = "q, h", halt: str = "h") -> Checked:
    return load(f"""machine m {{
      tape: {tape}
      blank: _
      states: {states}
      start: q
      halt: {halt}
      bound: steps {steps}, tape {cells}
      {rules}
    }}""")


# --------------------------------------------------------------------------- automata


def test_automaton_trace_and_verdict() -> None:
    parity = program("parity")
    result = run_automaton(parity, ["1", "0", "1", "1"])
    assert result == AutomatonRun(trace=("even", "odd", "odd", "even", "odd"),
                                  final_state="odd", output="reject", steps=4)
    empty = run_automaton(parity, [])
    assert empty == AutomatonRun(("even",), "even", "accept", 0)


def test_automaton_rejects_symbols_outside_the_alphabet() -> None:
    with pytest.raises(InputError, match=r"symbol '2' \(position 1\) is not in the alphabet"):
        run_automaton(program("parity"), ["1", "2"])


@given(st.lists(st.sampled_from("01"), max_size=60))
def test_parity(word: list[str]) -> None:
    expected = "accept" if word.count("1") % 2 == 0 else "reject"
    assert run(program("parity"), word).output == expected


@given(st.integers(min_value=0, max_value=10**12))
def test_div3_on_binary_numbers(number: int) -> None:
    word = list(bin(number)[2:])
    assert run(program("div3"), word).output == ("accept" if number % 3 == 0 else "reject")
    assert run(program("div3"), ["0", *word]).output == run(program("div3"), word).output


@given(st.lists(st.sampled_from("ab"), max_size=30))
def test_ends_ab(word: list[str]) -> None:
    expected = "accept" if "".join(word).endswith("ab") else "reject"
    assert run(program("ends_ab"), word).output == expected


@given(st.lists(st.sampled_from("01"), max_size=30))
def test_shift2(word: list[str]) -> None:
    result = run(program("shift2"), word)
    last_two = "".join(["0", "0", *word][-2:])
    assert result.final_state == f"s{last_two}"
    assert result.output == ("accept" if last_two == "11" else "reject")


@given(st.lists(st.sampled_from("abc"), max_size=40))
def test_mod5x5(word: list[str]) -> None:
    a, b = word.count("a") % 5, word.count("b") % 5
    result = run(program("mod5x5"), word)
    assert result.final_state == f"a{a}_b{b}"
    assert result.output == ("accept" if a == b == 0 else "reject")


@given(st.lists(st.sampled_from("abc"), max_size=30))
def test_no_aa(word: list[str]) -> None:
    expected = "reject" if "aa" in "".join(word) else "accept"
    assert run(program("no_aa"), word).output == expected


@given(st.data())
def test_generated_automata_follow_their_table(data: st.DataObject) -> None:
    automaton = load(data.draw(automaton_sources(max_states=8)))
    word = data.draw(words(automaton.alphabet, max_len=30))
    result = run_automaton(automaton, word)
    assert len(result.trace) == len(word) + 1 == result.steps + 1
    assert result.trace[0] == automaton.start
    for state, symbol, following in zip(result.trace, word, result.trace[1:], strict=False):
        assert automaton.transition_table[state, symbol] == following
    assert (result.output == "accept") == (result.final_state in automaton.accept)


# --------------------------------------------------------------------------- memories


def test_memory_lookup_default_and_absent_key() -> None:
    capitals = load("memory capitals { france -> paris italy -> rome default: unknown }")
    assert run_memory(capitals, "italy") == MemoryRun("rome", 1)
    assert run_memory(capitals, "spain").output == "unknown"
    strict = load("memory m { a -> 1 }")
    with pytest.raises(InputError, match="key 'b' is not in memory 'm' and it has no default"):
        run_memory(strict, "b")
    assert run(strict, "a").output == "1"
    assert run(strict, ["a"]).output == "1"
    with pytest.raises(InputError, match="one key"):
        run(strict, ["a", "a"])


# --------------------------------------------------------------------------- machines


INCREMENT = """machine increment {
  tape: 0, 1, _
  blank: _
  states: carry, done
  start: carry
  halt: done
  bound: steps 64, tape 8
  carry 1 -> 0 R carry
  carry 0 -> 1 S done
  carry _ -> 1 S done
}"""


@pytest.mark.parametrize("number", range(0, 127))
def test_increment_lsb_first(number: int) -> None:
    bits = list(bin(number)[2:][::-1]) if number else []
    result = run_machine(load(INCREMENT), bits)
    assert result.status == "halted" and result.final_state == "done"
    assert result.output == bin(number + 1)[2:][::-1]
    trailing_ones = (number ^ (number + 1)).bit_length() - 1
    assert result.steps == trailing_ones + 1  # one carry per trailing 1, then the final write


def test_increment_runs_out_of_tape() -> None:
    result = run_machine(load(INCREMENT), ["1"] * 8)
    # the 8th step would move R from cell 7 to cell 8: not taken
    assert result == MachineRun(output="00000001", status="out_of_tape", final_state="carry",
                                steps=7, tape=("0",) * 7 + ("1",), head=7)


def test_halting_start_state_takes_no_step() -> None:
    m = machine("", states="q", halt="q")
    result = run_machine(m, ["0", "1"])
    assert (result.status, result.steps, result.output, result.head) == ("halted", 0, "01", 0)


def test_step_limit() -> None:
    m = machine("q * -> 1 S q", steps=5)
    result = run_machine(m, [])
    assert (result.status, result.steps, result.final_state) == ("step_limit", 5, "q")
    assert result.output == "1"


def test_reaching_a_halting_state_on_the_last_allowed_step_is_halted() -> None:
    # reaching a halting state with the last allowed step is `halted`, not `step_limit`
    m = machine("q * -> 1 R h", steps=1)
    assert run_machine(m, []).status == "halted"


def test_left_on_cell_zero_stays() -> None:
    m = machine("q * -> 1 L p\n p * -> 1 R h", states="q, p, h")
    result = run_machine(m, ["0"])
    assert result.tape == ("1", "_", "_", "_")
    assert result.head == 1 and result.steps == 2 and result.output == "1"


def test_output_strips_trailing_blanks_keeps_inner_ones() -> None:
    m = machine("q 0 -> _ R h\n q * -> _ R h")
    assert run_machine(m, ["0", "1"]).output == "_1"
    assert run_machine(m, ["1"]).output == ""


def test_output_joins_multi_character_symbols_with_spaces() -> None:
    m = load("""machine words {
      tape: one, two, _
      blank: _
      states: q, h
      start: q
      halt: h
      bound: steps 10, tape 4
      q one -> two R q
      q two -> one R q
      q _ -> _ S h
    }""")
    result = run_machine(m, ["one", "two"])
    assert result.output == "two one" and result.status == "halted"


@pytest.mark.parametrize(
    ("word", "message"),
    [
        (["0"] * 5, "the input has 5 symbols but machine 'm' has 4 tape cells"),
        (["0", "x"], r"symbol 'x' \(position 1\) is not on the tape of machine 'm'"),
        (["_"], "may not contain the blank symbol '_'"),
    ],
)
def test_machine_input_errors(word: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        run_machine(machine("q * -> 1 S h"), word)
    assert "\n" not in str(caught.value)


def test_machine_tape_is_exactly_tape_cells_long() -> None:
    result = run(machine("q * -> 1 R q", steps=100, cells=3), ["0"])
    assert isinstance(result, MachineRun)
    assert result.status == "out_of_tape" and len(result.tape) == 3 and result.head == 2
    assert result.steps == 2
