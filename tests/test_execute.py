"""Batched rollout: decoding, feedback, halting, margins, recording."""

from __future__ import annotations

import itertools

import pytest
import torch

from lat.runtime.errors import InputError
from lat.runtime.execute import rollout, run
from lat.runtime.model import CompiledModel
from tests.runtime_fixtures import countdown, mod3_counter


def expected_mod3(word):
    trace, count = ["r0"], 0
    for symbol in word:
        count += symbol == "a"
        trace.append(f"r{count % 3}")
    return tuple(trace)


def test_all_short_words_in_one_mixed_length_batch():
    model = mod3_counter()
    words = [w for n in range(7) for w in itertools.product("ab", repeat=n)]
    for word, result in zip(words, rollout(model, words), strict=True):
        assert result.decoded["state"] == expected_mod3(word)
        assert result.value("accept") == ("accept" if expected_mod3(word)[-1] == "r0"
                                          else "reject")
        assert result.steps == len(word)
        assert result.stopped_by == "input"
        assert result.margin >= 1.0 and result.margin_resolved


def test_reference_form_agrees_with_fast_rollout():
    model = mod3_counter()
    words = [tuple("abaab"), (), tuple("bbbaaa")]
    fast = rollout(model, words)
    slow = rollout(model, words, reference=True)
    assert [r.decoded for r in fast] == [r.decoded for r in slow]
    assert [r.margin for r in fast] == [r.margin for r in slow]


def test_small_batches_give_the_same_answers():
    model = mod3_counter()
    words = [tuple("ab" * n) for n in range(9)]
    assert [r.decoded for r in rollout(model, words, batch_size=2)] == [
        r.decoded for r in rollout(model, words)
    ]


def test_halting_rule_and_step_limit():
    result = run(countdown(), ())
    assert result.decoded["state"] == ("s0", "s1", "s2", "halt")
    assert (result.steps, result.stopped_by) == (3, "halt")
    limited = run(countdown(max_steps=2), ())
    assert limited.decoded["state"] == ("s0", "s1", "s2")
    assert (limited.steps, limited.stopped_by) == (2, "max_steps")


def test_recording_keeps_every_prefix():
    model = mod3_counter()
    result = rollout(model, [tuple("aab")], record=True, dtype="fp64")[0]
    assert result.tokens.shape == (4, model.d) and result.outputs.shape == (4, model.d_out)
    Z = torch.from_numpy(result.tokens)[None]
    S = torch.cumsum(Z[0, :, :, None] * Z[0, :, None, :], dim=0)
    y = torch.einsum("ij,tjk,tk->ti", model.V[0].double(), S, Z[0])
    assert torch.allclose(torch.from_numpy(result.outputs), y)


def test_unknown_symbol_is_an_input_error():
    with pytest.raises(InputError, match="unknown symbol 'c'.*alphabet: a, b"):
        rollout(mod3_counter(), [tuple("abc")])


def test_a_margin_the_format_cannot_resolve_is_flagged():
    model = mod3_counter()
    V = model.V.clone()
    V[0, 1, 1] = 1.0 - 1e-9  # bos→r0 … (r0,a) now nearly ties r1 with r0 on its block
    V[0, 0, 1] = 1.0
    flawed = CompiledModel(V, model.Q, model.interface)
    result = run(flawed, ("a",))
    assert not result.margin_resolved
