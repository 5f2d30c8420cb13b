"""lat.testing: the strategies draw what they promise, in the variety they promise."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from lat.compiler.parse import RESERVED_WORDS
from lat.testing import automaton_sources, names, words

# generate only: shrinking a found example to the smallest one is slow and pointless here
QUICK = settings(max_examples=500, database=None, phases=[Phase.generate])


def test_sources_use_every_feature() -> None:
    for feature in [" * -> ", " | ", '"', "#", "accept:"]:
        assert feature in find(automaton_sources(max_states=4), lambda s, f=feature: f in s,
                               settings=QUICK)


@given(automaton_sources(min_states=3, max_states=4, min_symbols=2, max_symbols=3))
def test_source_sizes_are_respected(text: str) -> None:
    from lat.compiler.check import check_program
    from lat.compiler.parse import parse_program

    automaton = check_program(parse_program(text)).get(None)
    assert 3 <= len(automaton.states) <= 4
    assert 2 <= len(automaton.alphabet) <= 3


@given(st.data())
def test_words_are_over_the_alphabet(data: st.DataObject) -> None:
    word = data.draw(words(["a", "b c"], min_len=2, max_len=5))
    assert isinstance(word, tuple) and 2 <= len(word) <= 5
    assert set(word) <= {"a", "b c"}


@given(names())
def test_names_are_never_reserved(name: str) -> None:
    assert name not in RESERVED_WORDS
    assert name[0].isalpha() or name[0] == "_"


def test_import_has_no_side_effects() -> None:
    code = ("import hypothesis; before = hypothesis.settings.default; "
            "import lat.testing; assert hypothesis.settings.default is before")
    subprocess.run([sys.executable, "-c", code], check=True)
