"""Batched rollout: decoding, feedback, halting, margins, recording."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lat.runtime.errors import InputError, PrecisionError
from lat.runtime.execute import rollout, run
from lat.runtime.interface import Interface, OutputField, TokenField
from lat.runtime.model import CompiledModel
from tests.runtime_fixtures import (
    cancelling_heads,
    countdown,
    embedded_memory,
    long_prompt,
    mixed_signs,
    mod3_counter,
    near_tie,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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


def same_runs(fast, slow, margin_rel=1e-5):
    assert [r.decoded for r in fast] == [r.decoded for r in slow]
    assert [r.steps for r in fast] == [r.steps for r in slow]
    assert [r.stopped_by for r in fast] == [r.stopped_by for r in slow]
    assert [r.margin_resolved for r in fast] == [r.margin_resolved for r in slow]
    for a, b in zip(fast, slow, strict=True):
        assert a.margin == pytest.approx(b.margin, rel=margin_rel)


@given(words=st.lists(st.text("ab", max_size=12), min_size=1, max_size=12),
       batch_size=st.sampled_from([None, 1, 3]))
def test_every_kernel_agrees_with_the_reference_on_mixed_lengths(words, batch_size):
    model = mod3_counter()
    words = [tuple(w) for w in words]
    slow = rollout(model, words, reference=True)
    for kernel in ("auto", "recurrent"):
        fast = rollout(model, words, kernel=kernel, batch_size=batch_size)
        same_runs(fast, slow)
        for word, result in zip(words, fast, strict=True):
            assert result.decoded["state"] == expected_mod3(word)


@pytest.mark.parametrize("model", [long_prompt(), long_prompt(40), mixed_signs()],
                         ids=["prompt20", "prompt40", "mixed_signs"])
def test_prefilled_prompts_and_signed_weights_agree_with_the_reference(model):
    words = [tuple("abaab"), (), tuple("bbbaaab"), tuple("a")]
    slow = rollout(model, words, reference=True)
    for kernel in ("auto", "chunked", "parallel", "recurrent"):
        same_runs(rollout(model, words, kernel=kernel), slow)
    for word, result in zip(words, slow, strict=True):
        assert result.decoded["state"] == expected_mod3(word)


def test_the_decoder_prefills_only_where_it_pays():
    """Long prompts over a small d prefill; a machine's short prompt over d = 481 is
    stepped (its fold Σ_h Q_hᵀ S V_hᵀ alone would cost ~100 GFLOP for 256 rows)."""
    from lat.api import compile_source, shipped_program
    from lat.runtime.steppers import SparseStepper as _SparseStepper

    small = long_prompt(40)
    stepper = _SparseStepper(small.V, small.Q, small, 4, "fp32", torch.float32,
                             torch.device("cpu"), "auto")
    assert stepper.prefill_pays(40, 1)
    machine = compile_source(shipped_program("unary_mul.lat"), "unary_mul.lat").model
    stepper = _SparseStepper(machine.V, machine.Q, machine, 256, "fp32", torch.float32,
                             torch.device("cpu"), "auto", signed=True)
    assert not stepper.prefill_pays(len(machine.interface.prompt), 4)


@pytest.mark.parametrize("weights", ["bf16", "fp16", "fp32"])
def test_signed_machine_tokens_decode_like_the_reference(weights):
    """Machines' ±unit tokens take the coordinate decoder's signed mode; their rounding
    bound runs on the summed token, where writing the symbol already there cancels
    (e_(a,b) − e_(a,b) = 0): every decode and every margin verdict equals the loop form's."""
    from lat.api import compile_source, shipped_program

    machine = compile_source(shipped_program("busy.lat"), "busy.lat").model
    words = [(), ("1",), ("1", "1"), ("0", "1", "0"), ("1", "0", "1", "1")]
    fast = rollout(machine, words, weights=weights)
    slow = rollout(machine, words, weights=weights, reference=True)
    same_runs(fast, slow)
    assert all(r.margin_resolved for r in fast)


def test_recording_a_prefilled_prompt():
    model = long_prompt(20)
    fast = rollout(model, [tuple("ab")], record=True, dtype="fp64")[0]
    slow = rollout(model, [tuple("ab")], record=True, dtype="fp64", reference=True)[0]
    assert fast.tokens.shape == (22, model.d) and fast.outputs.shape == (22, model.d_out)
    assert (fast.tokens == slow.tokens).all()
    assert abs(fast.outputs - slow.outputs).max() < 1e-12


def test_halting_in_a_batch_with_the_dense_kernel():
    for kernel in ("auto", "recurrent", "reference"):
        results = rollout(countdown(), [(), ("x",)], kernel=kernel)
        assert [r.stopped_by for r in results] == ["halt", "halt"]
        assert all(r.decoded["state"] == ("s0", "s1", "s2", "halt") for r in results)


def test_bf16_flags_a_margin_it_cannot_resolve():
    """gap 0.002 below the winner: fp32 resolves it, bf16 rounds it away — flagged."""
    words = [tuple("aab"), tuple("ba")]
    exact = rollout(near_tie(0.002), words)
    assert all(r.margin_resolved for r in exact)
    for weights in ("bf16",):
        low = rollout(near_tie(0.002), words, weights=weights)
        assert not any(r.margin_resolved for r in low)
        with pytest.raises(PrecisionError, match="cannot resolve"):
            rollout(near_tie(0.002), words, weights=weights, on_unresolved="raise")
    # rounding can even make the runner-up tie the winner: still flagged, never silent
    tied = rollout(near_tie(0.0005), words, weights="bf16")
    assert not any(r.margin_resolved for r in tied)


def test_fp16_resolves_what_bf16_cannot():
    """fp16 has 3 more mantissa bits than bf16: a 0.01 gap survives it, honestly checked."""
    words = [tuple("aab"), tuple("ba")]
    fp16 = rollout(near_tie(0.01), words, weights="fp16")
    assert all(r.margin_resolved for r in fp16)
    assert [r.decoded for r in fp16] == [r.decoded for r in rollout(near_tie(0.01), words)]


def test_low_precision_weights_keep_wide_margins():
    """Compiled automata (margin ≥ 1, non-negative weights) run in bf16 and fp16 with
    the same answers; signed weights get the |V| S |Q| bound and still resolve."""
    words = [tuple(w) for n in range(5) for w in itertools.product("ab", repeat=n)]
    for model in (mod3_counter(), mixed_signs(), long_prompt()):
        exact = rollout(model, words)
        for weights in ("bf16", "fp16"):
            low = rollout(model, words, weights=weights)
            assert [r.decoded for r in low] == [r.decoded for r in exact]
            assert all(r.margin_resolved for r in low)


def test_weights_a_format_cannot_hold_are_refused():
    model = mod3_counter()
    big = CompiledModel(model.V * 1e6, model.Q, model.interface)
    with pytest.raises(PrecisionError, match="overflows fp16"):
        rollout(big, [tuple("a")], weights="fp16")
    tiny = CompiledModel(model.V * 1e-9, model.Q, model.interface)
    with pytest.raises(PrecisionError, match="underflow"):
        rollout(tiny, [tuple("a")], weights="fp16")
    with pytest.raises(ValueError, match="unknown weight format"):
        rollout(model, [tuple("a")], weights="int8")


def test_options_are_checked():
    model = mod3_counter()
    with pytest.raises(ValueError, match="unknown kernel"):
        rollout(model, [()], kernel="magic")
    with pytest.raises(ValueError, match="unknown dtype"):
        rollout(model, [()], dtype="fp8")
    with pytest.raises(ValueError, match="unknown device"):
        rollout(model, [()], device="tpu")


def test_an_interface_that_never_stops_is_an_error():
    states = ("s0", "s1")
    interface = Interface(
        kind="machine", program="loop", input_alphabet=("x",),
        token_fields=(TokenField("bos", "const"), TokenField("state", "onehot", states)),
        output_fields=(OutputField("state", states),),
        prompt=({"bos": ()},), feed={"state": ("output:state",)},
        result_field="state",
    )
    model = CompiledModel(torch.ones(1, 2, 3), torch.eye(3)[None], interface)
    with pytest.raises(ValueError, match="never stops"):
        rollout(model, [()])


def test_results_stay_in_input_order_when_batches_are_sorted():
    model = mod3_counter()
    words = [tuple("a" * n) for n in (3, 0, 7, 1, 5)]
    results = rollout(model, words, batch_size=2)
    assert [r.input for r in results] == words
    assert [r.steps for r in results] == [3, 0, 7, 1, 5]


def test_cancelling_heads_are_judged_by_their_absolute_terms():
    """|y| is small but Σ|V| S |Q| z is not: bf16's rounding of the big weights could move
    the outputs by more than the margin, so the run is flagged; fp32 and fp16 resolve it."""
    words = [tuple("aab"), tuple("babba")]
    model = cancelling_heads()
    exact = rollout(model, words, reference=True)
    assert [r.decoded["state"] for r in exact] == [expected_mod3(w) for w in words]
    for kernel in ("auto", "recurrent"):
        same_runs(rollout(model, words, kernel=kernel), exact, margin_rel=1e-4)
        assert all(r.margin_resolved for r in rollout(model, words, weights="fp16",
                                                      kernel=kernel))
        assert not any(r.margin_resolved for r in rollout(model, words, weights="bf16",
                                                          kernel=kernel))


def test_dense_signed_token_embeddings_and_an_other_slot():
    """Tokens that are not binary (an `embedding` field) run through dense steps, with
    |z| in the bound; unknown keys take `input_other`; an empty feedback spec is fine."""
    model = embedded_memory()
    words = [("k0",), ("k1",), ("k2",), ("unknown",)]
    slow = rollout(model, words, reference=True)
    assert [r.value("value") for r in slow] == ["x", "y", "x", "y"]
    for options in ({}, {"kernel": "recurrent"}, {"weights": "fp16"}):
        fast = rollout(model, words, **options)
        assert [r.value("value") for r in fast] == ["x", "y", "x", "y"]
        assert all(r.margin_resolved for r in fast)
    recorded = rollout(model, [("k1",)], record=True, dtype="fp64")[0]
    assert recorded.tokens.tolist() == [[0.0, 1.0, 0.0]]


@needs_cuda
def test_cuda_rollout_equals_cpu():
    model = mod3_counter()
    words = [tuple("abaab"), (), tuple("bbbaaab")]
    same_runs(rollout(model, words, device="cuda"), rollout(model, words))
