"""End to end: compiled automata are relearned, certified and checked for equivalence."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from itertools import product
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lat.compiler.lower.automaton import lower_automaton
from lat.learner import LearnResult, domain_words, input_lengths, learn
from lat.learner.traces import load_traces, record_traces, sample_words, save_traces
from lat.runtime.errors import InputError
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel


def automaton_model(states, alphabet, table, accept=(), name="random") -> CompiledModel:
    spec = SimpleNamespace(name=name, alphabet=tuple(alphabet), states=tuple(states),
                           start=states[0], accept=frozenset(accept), transition_table=table)
    lowered = lower_automaton(spec)
    return CompiledModel(torch.from_numpy(lowered.V), torch.from_numpy(lowered.Q),
                         lowered.interface)


def random_automaton(n_states, n_symbols, seed) -> CompiledModel:
    rng = np.random.default_rng(seed)
    states = tuple(f"q{i}" for i in range(n_states))
    alphabet = tuple(f"s{i}" for i in range(n_symbols))
    table = {(q, a): states[rng.integers(n_states)] for q in states for a in alphabet}
    return automaton_model(states, alphabet, table, accept=states[::3])


@st.composite
def automata(draw):
    n_states = draw(st.integers(2, 6))
    alphabet = ("a", "b", "c")[: draw(st.integers(2, 3))]
    states = tuple(f"q{i}" for i in range(n_states))
    table = {(q, a): draw(st.sampled_from(states)) for q in states for a in alphabet}
    accept = draw(st.sets(st.sampled_from(states)))
    return automaton_model(states, alphabet, table, accept)


PARITY = dict(states=("even", "odd"), alphabet=("0", "1"), accept=("even",),
              table={("even", "0"): "even", ("even", "1"): "odd",
                     ("odd", "0"): "odd", ("odd", "1"): "even"})


@given(automata())
def test_random_automata_are_relearned_and_certified(model):
    """Training words include every word of a sampled domain (length ≤ 5), so coverage of
    that sample must hold: identifiable, with the scope named `sampled`. (Over the exact
    domain — every length — these words need not suffice: see test_certificate_exact.py.)"""
    alphabet = model.interface.input_alphabet
    short = [w for n in range(6) for w in product(alphabet, repeat=n)]
    long = sample_words(model.interface, 300, 16, np.random.default_rng(0))
    traces = record_traces(model, short + long)
    result = learn(model, traces=traces, domain_samples=200, domain_max_len=5, exact=False)
    assert result.certificate.scope == "sampled"
    assert result.train_max_abs_error <= 1e-6
    assert result.equivalent, result.mismatches
    assert result.certificate.identifiable, result.certificate.notes
    assert result.certificate.coverage_residual <= 1e-8
    assert result.certificate.lambda_min_full == 0.0  # one-hot data: honest zero
    assert result.checked >= 200
    assert result.heads == model.heads == 1  # minimise.py reaches the compiled head count


@given(automata())
def test_random_automata_from_random_words_never_overclaim(model):
    """learn's own sampling: equivalent on the domain, and the certificate is sound — it
    claims identifiability only with coverage, and says why when it does not."""
    result = learn(model, samples=1000, max_len=24, domain_samples=200, domain_max_len=10)
    certificate = result.certificate
    assert result.train_max_abs_error <= 1e-6
    assert result.equivalent, result.mismatches
    if certificate.identifiable:
        assert certificate.coverage_residual <= 1e-8 and certificate.lambda_min_span > 0
    else:
        assert certificate.coverage_residual > 1e-8 and "not covered" in certificate.notes


def test_parity_result_fields_and_learned_artifact(tmp_path):
    source = automaton_model(**PARITY, name="parity")
    phases = set()
    result = learn(source, samples=200, max_len=12, domain_samples=100, domain_max_len=8,
                   progress=lambda phase, done, total: phases.add(phase))
    assert isinstance(result, LearnResult)
    assert {"record", "features", "domain", "check"} <= phases
    assert result.equivalent and result.certificate.identifiable
    assert result.traces == 200
    assert result.samples == result.fit.samples
    report = result.to_json()
    json.dumps(report)  # serialisable as is
    assert {"samples", "train_max_abs_error", "heads", "certificate", "equivalent",
            "checked"} <= set(report)
    assert {"lambda_min_full", "coverage_residual", "lambda_min_span",
            "identifiable"} <= set(report["certificate"])
    model = result.model
    assert model.V.dtype == torch.float64 and model.heads == result.heads
    assert model.interface == source.interface
    assert model.info["learned_from"] == source.sha256()
    assert model.info["certificate"]["identifiable"] is True
    assert model.info["observed_margin"] > 0.5  # compiled margin is 1; learned ≈ 1
    path = tmp_path / "learned.safetensors"
    model.save(path)
    loaded = CompiledModel.load(path)
    words = [("1", "0", "1"), (), ("1",) * 9]
    for a, b in zip(rollout(loaded, words), rollout(source, words), strict=True):
        assert a.decoded == b.decoded


def test_learning_from_saved_traces_alone(tmp_path):
    source = random_automaton(4, 2, seed=5)
    traces = record_traces(source, sample_words(source.interface, 400, 16,
                                                np.random.default_rng(0)))
    save_traces(traces, tmp_path / "t.safetensors")
    result = learn(traces=load_traces(tmp_path / "t.safetensors"), domain_samples=200)
    # no source program: nothing to be equivalent to, only recordings to reproduce
    assert result.equivalent is None and result.reproduces_traces and result.checked == 400
    assert result.certificate.scope == "recorded"
    assert result.certificate.identifiable, result.certificate.notes
    assert "traces only" in result.certificate.notes
    assert result.model.info["learned_from"] == source.sha256()
    for a, b in zip(rollout(result.model, traces.inputs[:50]),
                    rollout(source, traces.inputs[:50]), strict=True):
        assert a.decoded == b.decoded


def test_unidentifiable_training_data_is_reported():
    """Training words never use symbol `s2`; the domain does."""
    source = random_automaton(4, 3, seed=6)
    words = [tuple(s for s in w if s != "s2")
             for w in sample_words(source.interface, 300, 16, np.random.default_rng(1))]
    result = learn(source, traces=record_traces(source, words), domain_samples=200,
                   domain_max_len=8)
    assert result.train_max_abs_error <= 1e-9
    assert not result.certificate.identifiable
    assert result.certificate.coverage_residual > 1e-3
    assert result.equivalent == (not result.mismatches)
    assert not result.equivalent  # tokens with s2 were never seen: no weights for them


def test_mismatches_against_a_different_source_are_found():
    parity = automaton_model(**PARITY, name="parity")
    stuck = automaton_model(**{**PARITY, "table": {k: "even" for k in PARITY["table"]}},
                            name="parity")
    traces = record_traces(parity, sample_words(parity.interface, 100, 8,
                                                np.random.default_rng(2)))
    result = learn(stuck, traces=traces, domain_samples=50, domain_max_len=6)
    assert not result.equivalent
    assert 0 < len(result.mismatches) <= 8
    assert all(isinstance(w, tuple) for w in result.mismatches)


def test_unsupported_sources_and_missing_data_are_refused():
    source = automaton_model(**PARITY)
    for changed in (dataclasses.replace(source, scale=0.5),
                    dataclasses.replace(source, normalise=True)):
        with pytest.raises(ValueError, match="scale 1"):
            learn(changed)
    with pytest.raises(ValueError, match="source model or recorded traces"):
        learn()


def test_domain_words_enumerate_short_words_then_sample():
    interface = automaton_model(**PARITY).interface
    words = domain_words(interface, 20, range(7), np.random.default_rng(0))
    # 1 + 2 + 4 = 7 words up to length 2 (≤ 10); length 3 would make 15 > 10.
    assert words[:7] == [(), ("0",), ("1",), ("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert len(words) == 27 and max(len(w) for w in words) <= 6
    single = domain_words(interface, 20, [1], np.random.default_rng(0))
    assert single[:2] == [("0",), ("1",)] and {len(w) for w in single} == {1}


def test_input_lengths_ask_the_runtime(monkeypatch):
    import lat.learner.domain as learner

    source = automaton_model(**PARITY)
    assert input_lengths(source, 5) == [0, 1, 2, 3, 4, 5]

    def bounded_rollout(model, words, **options):  # refuses empty words and words over 3
        if not 1 <= len(words[0]) <= 3:
            raise InputError("word length out of range")
        return []

    monkeypatch.setattr(learner, "rollout", bounded_rollout)
    assert input_lengths(source, 6) == [1, 2, 3]
    words = learner.sample_words_of_lengths(source.interface, 200, [1, 2, 3],
                                            np.random.default_rng(0))
    assert {len(w) for w in words} == {1, 2, 3}


def test_twenty_state_four_symbol_automaton():
    """d = 81, 269,001 reduced features; learned in a few seconds (printed, not asserted)."""
    source = random_automaton(20, 4, seed=1)
    started = time.perf_counter()
    result = learn(source, samples=1000, max_len=64)
    elapsed = time.perf_counter() - started
    print(f"\n20-state 4-symbol automaton (d={source.d}): learned in {elapsed:.1f}s; "
          f"{result.samples} samples, {result.heads} heads, "
          f"{result.certificate.features_used}/{result.certificate.features_total} features, "
          f"phases {result.seconds}")
    assert result.equivalent, result.mismatches
    assert result.train_max_abs_error <= 1e-6
    assert result.certificate.features_used <= 6400 + 81


def test_support_coefficients_are_the_heads_linearisation():
    from lat.learner.heads import head_coefficients
    from lat.learner.solve import support_coefficients

    rng = np.random.default_rng(0)
    V, Q = rng.standard_normal((3, 2, 5)), rng.standard_normal((3, 5, 5))
    columns = np.array([0, 3, 7, 20, 44, 60, 74])
    np.testing.assert_allclose(support_coefficients(V, Q, columns),
                               head_coefficients(V, Q)[columns], atol=1e-13)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LAT_SLOW"), reason="set LAT_SLOW=1 (minutes on a "
                    "loaded 2-core machine); `lat bench` reports learn_64x4_seconds")
def test_sixty_four_state_four_symbol_automaton():
    """Issue 5: a 64-state 4-symbol automaton (d = 257) relearned and equivalent; ~71 s
    alone on the 2-core development machine (the ≤ 120 s figure; `lat bench` reports it
    as learn_64x4_seconds). Time printed, not asserted: under a shared CPU it varies 5×."""
    source = random_automaton(64, 4, seed=0)
    started = time.perf_counter()
    result = learn(source, samples=1000, max_len=64)
    elapsed = time.perf_counter() - started
    print(f"\n64-state 4-symbol automaton (d={source.d}): {elapsed:.1f}s, {result.traces} "
          f"traces, {result.heads} heads, phases {result.seconds}")
    assert result.equivalent, result.mismatches
    assert result.certificate.identifiable, result.certificate.notes
