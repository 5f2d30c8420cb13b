"""Interface: word splitting (DESIGN §3), symbol checks, JSON round trip, validation."""

from __future__ import annotations

import dataclasses

import pytest

from lat.runtime.errors import ArtifactError, InputError
from lat.runtime.interface import Interface
from tests.runtime_fixtures import countdown, mod3_counter


def with_alphabet(alphabet):
    return dataclasses.replace(mod3_counter().interface, input_alphabet=tuple(alphabet))


def test_split_on_whitespace_when_present():
    assert with_alphabet(["ab", "c"]).split_word("ab c ab") == ("ab", "c", "ab")


def test_split_into_characters_when_every_symbol_is_one_character():
    assert with_alphabet("ab").split_word("abba") == ("a", "b", "b", "a")


def test_whole_string_is_one_symbol_otherwise():
    assert with_alphabet(["yes", "no"]).split_word("yes") == ("yes",)


def test_empty_word():
    assert with_alphabet("ab").split_word("") == ()


def test_unknown_symbol_names_the_alphabet_and_a_close_match():
    with pytest.raises(InputError, match=r"unknown symbol 'ye'.*did you mean 'yes'"):
        with_alphabet(["yes", "no"]).split_word("ye")


@pytest.mark.parametrize("model", [mod3_counter(), countdown(max_steps=4)])
def test_json_round_trip(model):
    assert Interface.from_json(model.interface.to_json()) == model.interface


def test_malformed_interface_is_refused():
    with pytest.raises(ArtifactError):
        Interface.from_json("{not json")
    broken = mod3_counter().interface.to_json().replace('"result_field": "accept"',
                                                        '"result_field": "nothing"')
    with pytest.raises(ArtifactError, match="result field"):
        Interface.from_json(broken)
