"""The regression sharded over torch.distributed (gloo, local processes) equals the
single-process fit."""

from __future__ import annotations

import time

import numpy as np

from lat.learner import learn
from lat.learner.distributed import fit_workers
from lat.learner.solve import fit, mhla_outputs
from lat.learner.traces import record_traces, sample_words
from tests.test_learner import random_automaton


def test_two_workers_equal_one_on_a_small_automaton():
    source = random_automaton(5, 3, seed=2)
    started = time.perf_counter()
    one = learn(source, samples=300, max_len=16, domain_samples=200, domain_max_len=8)
    two = learn(source, samples=300, max_len=16, domain_samples=200, domain_max_len=8,
                workers=2)
    print(f"\nworkers 1 vs 2: {time.perf_counter() - started:.1f}s")
    assert one.equivalent and two.equivalent
    assert one.traces == two.traces and one.samples == two.samples
    a, b = one.fit.coefficients, two.fit.coefficients
    np.testing.assert_array_equal(a.columns, b.columns)
    assert np.abs(a.values - b.values).max() <= 1e-9
    assert one.heads == two.heads
    assert one.certificate.identifiable == two.certificate.identifiable
    assert abs(one.train_max_abs_error - two.train_max_abs_error) <= 1e-9
    words = sample_words(source.interface, 50, 12, np.random.default_rng(9))
    tokens = record_traces(source, words).tokens
    for x, y in zip(mhla_outputs(one.fit.V, one.fit.Q, tokens),
                    mhla_outputs(two.fit.V, two.fit.Q, tokens), strict=True):
        assert np.abs(x - y).max() <= 1e-9


def test_sharded_fit_of_dense_data_with_an_empty_shard():
    rng = np.random.default_rng(0)
    d = 3
    V, Q = rng.standard_normal((1, 1, d)), rng.standard_normal((1, d, d))
    tokens = [rng.standard_normal((int(rng.integers(5, 12)), d)) for _ in range(2)]
    pairs = list(zip(tokens, mhla_outputs(V, Q, tokens), strict=True))
    single = fit(pairs)
    sharded = fit_workers(pairs, 3)  # rank 2 holds nothing
    assert sharded.samples == single.samples and sharded.sequences == 2
    assert np.abs(sharded.coefficients.values - single.coefficients.values).max() <= 1e-9
    assert sharded.train_max_abs_error <= 1e-9
