"""The identifiability certificate: it claims exactly what the data show, never more."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from lat.compiler.lower.automaton import lower_automaton
from lat.learner.certificate import COVERAGE_TOL, certify
from lat.learner.features import n_features
from lat.learner.solve import fit, mhla_outputs
from lat.learner.traces import record_traces, sample_words
from lat.runtime.model import CompiledModel


def gaussian_pairs(rng, V, Q, count, max_len=10):
    tokens = [rng.standard_normal((int(rng.integers(1, max_len + 1)), V.shape[2]))
              for _ in range(count)]
    return list(zip(tokens, mhla_outputs(V, Q, tokens), strict=True))


def automaton_model(seed=0, n_states=4, alphabet=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    states = tuple(f"q{i}" for i in range(n_states))
    table = {(q, a): states[rng.integers(n_states)] for q in states for a in alphabet}
    spec = SimpleNamespace(name="random", alphabet=alphabet, states=states, start=states[0],
                           accept=frozenset(states[:1]), transition_table=table)
    lowered = lower_automaton(spec)
    return CompiledModel(torch.from_numpy(lowered.V), torch.from_numpy(lowered.Q),
                         lowered.interface)


def test_random_mhla_teacher_is_identifiable():
    rng = np.random.default_rng(0)
    V, Q = rng.standard_normal((2, 4, 4)) / 2, rng.standard_normal((2, 4, 4)) / 2
    result = fit(gaussian_pairs(rng, V, Q, 80))
    assert result.train_max_abs_error <= 1e-8
    domain = [rng.standard_normal((12, 4)) for _ in range(20)]  # longer than training
    certificate = certify(result, domain)
    assert certificate.lambda_min_full > 0
    assert certificate.lambda_min_span == certificate.lambda_min_full
    assert certificate.coverage_residual <= 1e-12  # the full space is spanned
    assert certificate.identifiable
    assert certificate.features_total == certificate.features_used == n_features(4)
    assert certificate.domain_samples == 240 and certificate.domain_sequences == 20


def test_one_hot_program_full_lambda_is_zero_but_domain_is_covered():
    model = automaton_model()
    rng = np.random.default_rng(1)
    traces = record_traces(model, sample_words(model.interface, 400, 16, rng))
    result = fit(traces)
    domain = record_traces(model, sample_words(model.interface, 200, 8, rng))
    certificate = certify(result, domain)
    assert certificate.lambda_min_full == 0.0
    assert "lambda_min_full = 0" in certificate.notes
    assert certificate.features_used < certificate.features_total
    assert certificate.coverage_residual <= COVERAGE_TOL
    assert certificate.lambda_min_span > 0
    assert certificate.identifiable


def test_training_without_a_symbol_is_not_identifiable():
    """UNIDENTIFIABLE data: training words never use `c`, the domain does."""
    model = automaton_model()
    rng = np.random.default_rng(2)
    words = [tuple(s for s in w if s != "c")
             for w in sample_words(model.interface, 300, 16, rng)]
    result = fit(record_traces(model, words))
    assert result.train_max_abs_error <= 1e-9  # the fit itself is perfect...
    domain = record_traces(model, sample_words(model.interface, 100, 8, rng))
    certificate = certify(result, domain)
    assert not certificate.identifiable  # ...but it says nothing about words with `c`
    assert certificate.coverage_residual > 1e-3
    assert "not covered" in certificate.notes


def test_training_on_very_short_words_is_not_identifiable():
    model = automaton_model(seed=3)
    rng = np.random.default_rng(3)
    result = fit(record_traces(model, sample_words(model.interface, 50, 1, rng)))
    domain = record_traces(model, sample_words(model.interface, 100, 10, rng))
    certificate = certify(result, domain)
    assert not certificate.identifiable
    assert certificate.coverage_residual > 1e-3


def test_unrealisable_data_is_not_certified():
    rng = np.random.default_rng(4)
    tokens = [rng.standard_normal((8, 3)) for _ in range(40)]
    pairs = [(Z, rng.standard_normal((8, 2))) for Z in tokens]  # noise, not an MHLA
    result = fit(pairs)
    assert result.train_max_abs_error > 1e-3
    certificate = certify(result, tokens)
    assert certificate.coverage_residual <= COVERAGE_TOL
    assert not certificate.identifiable
    assert "not reproduced" in certificate.notes


def test_an_empty_domain_certifies_nothing():
    rng = np.random.default_rng(5)
    V, Q = rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 3, 3))
    result = fit(gaussian_pairs(rng, V, Q, 30))
    certificate = certify(result, [])
    assert certificate.domain_samples == 0
    assert not certificate.identifiable


def test_a_feature_outside_the_support_counts_fully():
    # Training tokens only use coordinates 0 and 1 of d = 3; the domain uses coordinate 2.
    rng = np.random.default_rng(6)
    V, Q = rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 3, 3))
    tokens = [np.c_[rng.standard_normal((6, 2)), np.zeros((6, 1))] for _ in range(30)]
    result = fit(list(zip(tokens, mhla_outputs(V, Q, tokens), strict=True)))
    assert result.features_used < result.features_total
    covered = certify(result, tokens[:3])
    assert covered.identifiable and covered.lambda_min_full == 0.0
    outside = np.zeros((1, 3))
    outside[0, 2] = 1.0
    certificate = certify(result, [outside])
    assert certificate.coverage_residual == 1.0
    assert not certificate.identifiable


def test_few_samples_cover_themselves_but_not_fresh_inputs():
    """Fewer samples than features (the dual solve): the span is exactly the samples'."""
    rng = np.random.default_rng(7)
    V, Q = rng.standard_normal((1, 2, 4)), rng.standard_normal((1, 4, 4))
    tokens = [rng.standard_normal((5, 4)) for _ in range(3)]  # 15 samples < 40 features
    result = fit(list(zip(tokens, mhla_outputs(V, Q, tokens), strict=True)))
    assert all(block.dual for block in result.blocks)
    own = certify(result, tokens)
    assert own.coverage_residual <= 1e-12 and own.identifiable
    assert own.lambda_min_full == 0.0 and "round-off cut-off" in own.notes
    fresh = certify(result, [rng.standard_normal((5, 4))])
    assert fresh.coverage_residual > 1e-3 and not fresh.identifiable
