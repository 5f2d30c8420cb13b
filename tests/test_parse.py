"""Parser: the DSL of DESIGN.md §3 → AST, and syntax errors → located LatErrors."""

from __future__ import annotations

import lark
import pytest

from lat.compiler import ast
from lat.compiler.errors import LatError
from lat.compiler.parse import RESERVED_WORDS, parse_program

DESIGN_EXAMPLE = '''
automaton parity {
  alphabet: 0, 1
  states: even, odd
  start: even
  accept: even            # optional; default: no accepting state
  even 0 -> even          # STATE SYMBOL -> STATE
  even 1 -> odd
  odd 0 -> odd
  odd 1 -> even
}

memory capitals {
  france -> paris         # KEY -> VALUE, keys unique
  italy -> rome
  default: unknown        # optional: value for a key not in the table
}

machine increment {       # binary increment, least significant bit first
  tape: 0, 1, _           # tape alphabet
  blank: _
  states: carry, done
  start: carry
  halt: done
  bound: steps 64, tape 32
  carry 1 -> 0 R carry    # STATE READ -> WRITE MOVE NEXT, MOVE in L R S
  carry 0 -> 1 S done
  carry _ -> 1 S done
}
'''


def error_of(text: str) -> LatError:
    with pytest.raises(LatError) as caught:
        parse_program(text, "t.lat")
    return caught.value


def test_design_example_parses() -> None:
    program = parse_program(DESIGN_EXAMPLE, "design.lat")
    assert program.filename == "design.lat"
    automaton, memory, machine = program.declarations
    assert isinstance(automaton, ast.Automaton)
    assert automaton.name == ast.Name("parity")
    assert automaton.alphabet == (ast.Symbol("0"), ast.Symbol("1"))
    assert automaton.start.text == "even"
    assert [n.text for n in automaton.accept] == ["even"]
    assert automaton.transitions[1] == ast.Transition(
        ast.Name("even"), (ast.Symbol("1"),), ast.Name("odd"))
    assert isinstance(memory, ast.Memory)
    assert [(e.key.text, e.value.text) for e in memory.entries] == [
        ("france", "paris"), ("italy", "rome")]
    assert memory.default == ast.Symbol("unknown")
    assert isinstance(machine, ast.Machine)
    assert machine.bound == ast.Bound(64, 32)
    assert machine.blank == ast.Symbol("_")
    assert machine.rules[0] == ast.Rule(ast.Name("carry"), (ast.Symbol("1"),), ast.Symbol("0"),
                                        "R", ast.Name("carry"))


def test_positions_are_one_based_and_point_at_tokens() -> None:
    program = parse_program(DESIGN_EXAMPLE)
    automaton = program.declarations[0]
    assert automaton.pos == ast.Pos(2, 1)
    assert automaton.name.pos == ast.Pos(2, 11)
    assert automaton.alphabet[1].pos == ast.Pos(3, 16)
    assert automaton.transitions[0].pos == ast.Pos(7, 3)
    assert automaton.transitions[0].target.pos == ast.Pos(7, 13)
    machine = program.declarations[2]
    assert machine.rules[0].move_pos == ast.Pos(26, 16)
    assert [(item.keyword, item.pos.line) for item in machine.header] == [
        ("tape", 20), ("blank", 21), ("states", 22), ("start", 23), ("halt", 24), ("bound", 25)]


def test_pipes_stars_and_quoted_symbols() -> None:
    program = parse_program(r'''
        automaton a {
          alphabet: x, 7, "a b", "say \"hi\"", "back\\slash", "states", "tab\there"
          states: q
          start: q
          q x | 7 | "a b" -> q
          q * -> q
        }''')
    (a,) = program.declarations
    assert [s.text for s in a.alphabet] == [
        "x", "7", "a b", 'say "hi"', "back\\slash", "states", "tab\there"]
    assert [s.quoted for s in a.alphabet] == [False, False, True, True, True, True, True]
    assert a.transitions[0].symbols == (ast.Symbol("x"), ast.Symbol("7"), ast.Symbol("a b"))
    assert isinstance(a.transitions[1].symbols, ast.Star)


def test_quoted_and_bare_symbols_are_equal() -> None:
    assert ast.Symbol("a", quoted=True) == ast.Symbol("a")
    one = parse_program('memory m { "a" -> "0" }')
    other = parse_program("memory m { a -> 0 }")
    assert one == other


def test_items_in_any_order_and_on_one_line() -> None:
    text = "automaton a { q 0 -> q accept: q start: q states: q alphabet: 0 }"
    (a,) = parse_program(text).declarations
    assert [item.keyword for item in a.header] == ["accept", "start", "states", "alphabet"]
    assert a.states == (ast.Name("q"),)
    assert len(a.transitions) == 1


def test_lists_may_continue_on_the_next_line() -> None:
    (a,) = parse_program("automaton a {\n alphabet: 0,\n   1,\n 2\n}").declarations
    assert [s.text for s in a.alphabet] == ["0", "1", "2"]


def test_repeated_item_keeps_first_value_and_records_both() -> None:
    (a,) = parse_program("automaton a { start: p start: q }").declarations
    assert a.start.text == "p"
    assert [(i.keyword, i.pos.col) for i in a.header] == [("start", 15), ("start", 24)]


def test_missing_items_leave_placeholders() -> None:
    (m,) = parse_program("machine m { }").declarations
    assert (m.tape, m.states, m.halt, m.rules) == ((), (), (), ())
    assert m.start == ast.Name("") and m.blank == ast.Symbol("") and m.bound == ast.Bound(0, 0)
    assert m.header == ()
    (mem,) = parse_program("memory m { }").declarations
    assert mem.default is None and mem.entries == ()


def test_empty_list_before_a_keyword_or_brace() -> None:
    (a,) = parse_program("automaton a { accept: \n alphabet:\n}").declarations
    assert a.accept == () and a.alphabet == ()
    assert [item.keyword for item in a.header] == ["accept", "alphabet"]


def test_empty_file_and_comments_only() -> None:
    assert parse_program("").declarations == ()
    assert parse_program("# nothing here\n\n   # still nothing").declarations == ()


def test_moves_are_names_checked_later() -> None:
    (m,) = parse_program("machine m { q 0 -> 1 X q }").declarations
    assert m.rules[0].move == "X"


@pytest.mark.parametrize("word", sorted(RESERVED_WORDS))
def test_reserved_words_cannot_be_names(word: str) -> None:
    error = error_of(f"automaton a {{ states: q, {word} }}")
    assert f"'{word}' is a reserved word" in error.diagnostic.message


@pytest.mark.parametrize("word", sorted(RESERVED_WORDS))
def test_reserved_words_can_be_quoted_symbols(word: str) -> None:
    (a,) = parse_program(f'automaton a {{ alphabet: "{word}" }}').declarations
    assert a.alphabet == (ast.Symbol(word),)


def test_reserved_word_as_declaration_name() -> None:
    error = error_of("memory memory { a -> b }")
    assert error.diagnostic.message == "'memory' is a reserved word and cannot be used as a name"
    assert error.diagnostic.pos == ast.Pos(1, 8)


@pytest.mark.parametrize(
    ("text", "pos", "message", "hint_part"),
    [
        ("automaton a { q 0 => q }", (1, 19), "unexpected '='", "'->'"),
        ("automaton a { q 0 - > q }", (1, 19), "unexpected '-'", "'->'"),
        ("automaton a {\n  q 0 -> q", (2, 11), "unexpected end of file", "is never closed"),
        ('automaton a { alphabet: "x }', (1, 25), "unterminated string", "same line"),
        ("automaton a { alphabet: 0, }", (1, 28), "unexpected '}'", "a symbol"),
        ("automaton a { alphabet: -1 }", (1, 25), "unexpected character '-'", "a symbol"),
        ("automaton a { q 0 -> }", (1, 22), "unexpected '}'", "a name"),
        ("automaton { }", (1, 11), "unexpected '{'", "a name"),
        ("automata a { }", (1, 1), "unexpected 'automata'", "'automaton'"),
        ("machine m { bound: steps 3 }", (1, 28), "unexpected '}'", "','"),
        ("memory m { a -> b c }", (1, 21), "unexpected '}'", "'->'"),
        ("automaton a { tape: 0 }", (1, 15), "'tape:' is not an item of an automaton",
         "alphabet, states, start and accept"),
        ("automaton a { é }", (1, 15), "unexpected character 'é'", "a name"),
    ],
)
def test_syntax_errors(text: str, pos: tuple[int, int], message: str, hint_part: str) -> None:
    diagnostic = error_of(text).diagnostic
    assert (diagnostic.pos.line, diagnostic.pos.col) == pos
    assert diagnostic.message == message
    assert diagnostic.hint is not None and hint_part in diagnostic.hint
    assert diagnostic.filename == "t.lat"
    assert "\n" not in diagnostic.message


def test_no_lark_exception_escapes() -> None:
    for text in ["{", "}", "automaton", '"', "->", "automaton a { q * * -> q }", "\x00",
                 "machine m { bound: steps 99999999999999999999999, tape x }"]:
        try:
            parse_program(text)
        except LatError:
            pass
        except lark.LarkError as error:  # pragma: no cover - the failure being tested
            pytest.fail(f"lark error escaped for {text!r}: {error!r}")


def test_absurd_numbers_are_located_errors() -> None:
    text = "machine m { bound: steps " + "9" * 5000 + ", tape 3 }"
    diagnostic = error_of(text).diagnostic
    assert (diagnostic.pos.line, diagnostic.pos.col) == (1, 26)
    assert "5,000 digits is too large" in diagnostic.message
    assert diagnostic.filename == "t.lat"
    program = parse_program("machine m { bound: steps 000000000000000000000000000000000000001, "
                            "tape 3 }")  # leading zeros do not count
    assert program.declarations[0].bound.steps == 1


def test_a_byte_order_mark_is_not_part_of_the_program() -> None:
    program = parse_program("\ufeffautomaton a { q 0 -> q }")
    assert program.declarations[0].pos.col == 1


def test_byte_counts_format_beyond_a_float() -> None:
    from lat.compiler.lower import format_bytes

    assert format_bytes(1536) == "1.5 KiB" and format_bytes(3 * 1024**3) == "3 GiB"
    assert format_bytes(10**400).endswith("e+384 PiB")
