"""Single runs (`runtime.fast`) and streamed runs (`history=False`) equal the batched path."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lat.api import compile_file
from lat.runtime import fast
from lat.runtime.execute import rollout
from lat.runtime.tokens import Tokens

PROGRAMS = ("palindrome", "increment", "unary_mul", "parity", "div3", "dyck1", "capitals")


def words_for(model, count: int, seed: int = 0) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    alphabet = list(model.interface.input_alphabet)
    longest = min(model.interface.max_input_length or 10, 10)
    return [tuple(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))
            for _ in range(count)]


def same(a, b) -> bool:
    return (a.decoded == b.decoded and a.steps == b.steps and a.stopped_by == b.stopped_by
            and a.margin == b.margin and a.margin_resolved == b.margin_resolved
            and np.array_equal(a.tokens, b.tokens) and np.array_equal(a.outputs, b.outputs))


@pytest.mark.parametrize("name", PROGRAMS)
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_single_run_equals_batched(name, dtype):
    model = compile_file(f"programs/{name}.lat").model
    words = words_for(model, 12)
    batched = rollout(model, words, dtype=dtype, record=True)
    for word, expected in zip(words, batched, strict=True):
        assert same(rollout(model, [word], dtype=dtype, record=True)[0], expected), word


def test_counting_mode_hands_over_to_rows(monkeypatch):
    """Past its exactness limit the counted automaton writes its rows out and steps on."""
    model = compile_file("programs/div3.lat").model
    word = tuple(words_for(model, 1, seed=5)[0] * 20)
    expected = rollout(model, [word, word], record=True)[0]
    start = fast.SingleDecoder.start_counting

    def small_limit(self, plans, decode):
        start(self, plans, decode)
        self.limit = 3

    monkeypatch.setattr(fast.SingleDecoder, "start_counting", small_limit)
    assert same(rollout(model, [word], record=True)[0], expected)


@pytest.mark.parametrize("name", ["palindrome", "div3"])
def test_streamed_run_keeps_the_last_position(name):
    model = compile_file(f"programs/{name}.lat").model
    words = words_for(model, 6, seed=1)
    full = rollout(model, words)
    for streamed in (rollout(model, words, history=False),
                     [rollout(model, [w], history=False)[0] for w in words]):
        for a, b in zip(streamed, full, strict=True):
            assert a.decoded == {k: v[-1:] for k, v in b.decoded.items()}
            assert (a.steps, a.margin, a.margin_resolved, a.stopped_by) == (
                b.steps, b.margin, b.margin_resolved, b.stopped_by)


def test_signed_dense_tokens_equal_the_basis_sum():
    model = compile_file("programs/palindrome.lat").model
    tokens = Tokens(model.interface, [("a", "b")], torch.device("cpu"))
    assert tokens.signed_units
    d = tokens.d
    coords = torch.tensor([[0, d + 1, d, 2 * d + 1], [3, d + 4, 5, d + 6]])
    basis = torch.cat([torch.eye(d), torch.zeros(1, d), -torch.eye(d), torch.zeros(1, d)])
    assert torch.equal(tokens.dense(coords, torch.float32), basis[coords].sum(dim=-2))
