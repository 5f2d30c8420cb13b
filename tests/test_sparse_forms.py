"""Sparse weights run without densifying, and give what the dense forms give.

`mhla_sparse` equals the loop definition; the sparse decoder equals the dense coordinate
decoder step by step (binary and signed tokens, finished rows); rollouts with the sparse
form equal the default ones on every kind of shipped program (decodes, margins, flags),
batched and on the single-sequence path; big compiled tables are lowered sparse, equal to
the dense lowering, and run.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lat.api import shipped_program
from lat.bench import automaton_source
from lat.compiler import compile_source
from lat.compiler.check import check_program
from lat.compiler.lower.automaton import lower_automaton
from lat.compiler.lower.memory import exact_margin, lower_memory, onehot_margin
from lat.compiler.parse import parse_program
from lat.runtime.execute import rollout
from lat.runtime.forms import FORMS, TokenDecoder, mhla, mhla_reference
from lat.runtime.forms.sparse import SparseDecoder, is_sparse, mhla_sparse, prefers_sparse


def sparse_problem(B: int, T: int, d: int, H: int, d_out: int, seed: int):
    """Binary tokens and weights with about a third of their entries nonzero."""
    generator = torch.Generator().manual_seed(seed)
    Z = (torch.rand(B, T, d, generator=generator) < 0.3).float()
    keep_v = torch.rand(H, d_out, d, generator=generator) < 0.3
    keep_q = torch.rand(H, d, d, generator=generator) < 0.3
    V = torch.randint(-3, 4, (H, d_out, d), generator=generator).float() * keep_v
    Q = torch.randint(-3, 4, (H, d, d), generator=generator).float() * keep_q
    return Z, V, Q


shapes = st.fixed_dictionaries({
    "B": st.integers(1, 3), "T": st.integers(1, 12), "d": st.integers(1, 9),
    "H": st.integers(1, 3), "d_out": st.integers(1, 6), "seed": st.integers(0, 2**31),
})


@settings(max_examples=40, deadline=None)
@given(shape=shapes, normalise=st.booleans(), sparse_input=st.booleans())
def test_sparse_form_equals_reference(shape, normalise, sparse_input):
    Z, V, Q = sparse_problem(**shape)
    expected = mhla_reference(Z.double(), V.double(), Q.double(), 0.5, normalise)
    Vs, Qs = (V.to_sparse(), Q.to_sparse()) if sparse_input else (V, Q)
    got = mhla_sparse(Z, Vs, Qs, 0.5, normalise)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-4)
    assert FORMS["sparse"] is mhla_sparse
    assert torch.allclose(mhla(Z, Vs, Qs, 0.5, normalise, kernel="sparse"), got)


def test_sparse_form_masks_lengths_and_refuses_a_state():
    Z, V, Q = sparse_problem(2, 6, 5, 2, 3, seed=1)
    lengths = torch.tensor([6, 3])
    masked = Z.clone()
    masked[1, 3:] = 0
    assert torch.allclose(mhla_sparse(Z, V.to_sparse(), Q.to_sparse(), lengths=lengths),
                          mhla_reference(masked, V, Q))
    with pytest.raises(ValueError, match="state"):
        mhla_sparse(Z, V, Q, state=object())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), H=st.integers(1, 3), F=st.integers(1, 3),
       signed=st.booleans())
def test_sparse_decoder_equals_the_dense_decoder(seed, H, F, signed):
    """Step for step, with padding codes and finished rows (update set to nothing)."""
    d, d_out, B, steps = 7, 4, 3, 6
    _, V, Q = sparse_problem(1, 1, d, H, d_out, seed)
    dense = TokenDecoder(V, Q, B, dtype=torch.float64, signed=signed)
    sparse = SparseDecoder(V.to_sparse(), Q.to_sparse(), B, dtype=torch.float64,
                           signed=signed, scale=2.0)
    dense.scale = 2.0
    generator = torch.Generator().manual_seed(seed)
    top = 2 * d + 2 if signed else d + 1
    for _ in range(steps):
        coords = torch.randint(0, top, (B, F), generator=generator)
        update = coords.clone()
        update[0] = 2 * d + 1 if signed else d  # a finished row: no update
        assert torch.allclose(sparse.step(coords, update), dense.step(coords, update),
                              atol=1e-9)


def _words(model, count: int, longest: int, seed: int = 0) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    alphabet = list(model.interface.input_alphabet)
    if model.interface.kind == "memory":
        return [(key,) for key in alphabet[:count]]
    return [tuple(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))
            for _ in range(count)]


def _same(a, b) -> bool:
    return (a.decoded == b.decoded and a.margin_resolved == b.margin_resolved
            and a.steps == b.steps and a.stopped_by == b.stopped_by
            and abs(a.margin - b.margin) <= 1e-6 * max(1.0, abs(a.margin)))


@pytest.mark.parametrize("program", ["parity.lat", "capitals.lat", "increment.lat",
                                     "unary_mul.lat", "add.lat"])
@pytest.mark.parametrize("weights", ["fp32", "bf16"])
def test_sparse_rollouts_equal_the_default(program, weights):
    model = compile_source(shipped_program(program)).model
    words = _words(model, 24, 5)
    batched = rollout(model, words, weights=weights)
    sparse = rollout(model, words, weights=weights, kernel="sparse")
    assert all(_same(a, b) for a, b in zip(batched, sparse, strict=True))
    single = rollout(model, words[-1:], weights=weights, kernel="sparse", record=True)[0]
    assert _same(single, batched[-1])


def test_sparse_weights_of_a_model_run_as_the_dense_ones():
    """The same model with sparse COO V and Q: chosen automatically when its dense state
    would be big; forced here on a small one, and densified by the other forms."""
    dense = compile_source(automaton_source(40, 3)).model
    sparse = dense.__class__(dense.V.to_sparse(), dense.Q.to_sparse(), dense.interface)
    words = _words(dense, 30, 10)
    expected = rollout(dense, words)
    for kernel in ("auto", "sparse", "recurrent"):
        got = rollout(sparse, words, kernel=kernel)
        assert all(_same(a, b) for a, b in zip(expected, got, strict=True))
    assert not prefers_sparse(dense.V, dense.Q)  # small: the dense decoder is cheaper


def _checked(source: str):
    return check_program(parse_program(source)).get(None)


def test_sparse_lowering_equals_the_dense_one():
    automaton = _checked(automaton_source(25, 3, seed=4))
    memory = _checked("memory m {\n  a -> x\n  b -> y\n  c -> x\n  default: z\n}")
    for lowering, declaration in ((lower_automaton, automaton), (lower_memory, memory)):
        dense, sparse = lowering(declaration, sparse=False), lowering(declaration, sparse=True)
        assert is_sparse(sparse.V) and is_sparse(sparse.Q)
        assert torch.equal(sparse.V.to_dense(), torch.from_numpy(dense.V))
        assert torch.equal(sparse.Q.to_dense(), torch.from_numpy(dense.Q))
        assert sparse.decode_margin == dense.decode_margin == 1.0
        assert sparse.interface == dense.interface


def test_onehot_margin_is_the_exact_margin():
    rng = random.Random(2)
    for keys, values in ((1, 1), (5, 1), (9, 4), (30, 30)):
        value_of_key = torch.tensor([rng.randrange(values) for _ in range(keys)]).numpy()
        identity = torch.eye(keys, dtype=torch.float64).numpy()
        assert onehot_margin(value_of_key, values) == exact_margin(identity, value_of_key,
                                                                   values)
    with pytest.raises(ValueError, match="outside"):
        onehot_margin(torch.tensor([0, 3]).numpy(), 2)


def test_a_big_table_is_lowered_sparse_and_runs():
    entries = 5_000  # dense V and Q: 100 MB
    source = "memory big {\n" + "".join(f"  k{i} -> v{i % 97}\n" for i in range(entries))
    model = compile_source(source + "  default: none\n}").model
    assert model.sparse and is_sparse(model.Q) and prefers_sparse(model.V, model.Q)
    keys = [("k0",), ("k4999",), ("k1234",), ("nope",)]
    results = rollout(model, keys)
    assert [r.value("value") for r in results] == ["v0", f"v{4999 % 97}", f"v{1234 % 97}",
                                                   "none"]
    assert all(r.margin == 1.0 and r.margin_resolved for r in results)
    assert rollout(model, keys[1:2])[0].value("value") == f"v{4999 % 97}"  # single path


@pytest.mark.parametrize("nonnegative", [True, False])
def test_wide_fields_decode_field_by_field_as_the_padded_gather(nonnegative):
    """A 10,000-state automaton's outputs are one wide field and a narrow one: decoded on
    slices, with the same indices, margins and magnitudes (ties and negatives included)."""
    from lat.runtime.tokens import Decode

    model = compile_source(automaton_source(400, 2)).model
    decode = Decode(model.interface, nonnegative, torch.device("cpu"))
    assert decode.sliced
    generator = torch.Generator().manual_seed(5)
    y = torch.randint(-3, 4, (300, model.d_out), generator=generator).float()
    y[:10, -2:] = 0.0  # a tied verdict
    by_field = decode(y)
    decode.sliced = False
    assert all(torch.equal(a, b) for a, b in zip(by_field, decode(y), strict=True))
