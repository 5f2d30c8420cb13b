"""Count compression (learner/compress.py): the same regression and the same coverage from
≤ |U| rows per current token as from every prefix."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lat.api import shipped_program
from lat.compiler import compile_source
from lat.learner import solve
from lat.learner.certificate import sequence_residuals
from lat.learner.compress import CountSpanIndex, PrefixCounts
from lat.learner.domain import input_lengths, sample_words_of_lengths
from lat.learner.traces import record_traces
from tests.test_learner import random_automaton


def _traces(model, count, seed):
    words = sample_words_of_lengths(model.interface, count, input_lengths(model, 12),
                                    np.random.default_rng(seed))
    return record_traces(model, words)


@pytest.fixture(params=["automaton", "machine"])
def source(request):
    if request.param == "automaton":
        return random_automaton(8, 3, seed=4)
    return compile_source(shipped_program("increment.lat"), "increment.lat").model


def test_the_compressed_fit_is_the_fit_of_every_prefix(source, monkeypatch):
    traces = _traces(source, 300, seed=1)
    compressed = solve.fit(traces, minimise=False)
    assert compressed.count_spans is not None  # the tokens repeat: compression was used
    monkeypatch.setattr(solve, "COMPRESS_MIN_RATIO", 10**12)  # every prefix as a row
    plain = solve.fit(traces, minimise=False)
    assert plain.count_spans is None
    assert [b.rank for b in compressed.blocks] == [b.rank for b in plain.blocks]
    scale = max(1.0, float(np.abs(plain.coefficients.values).max()))
    assert np.abs(compressed.coefficients.values - plain.coefficients.values).max() \
        <= 1e-9 * scale
    assert compressed.train_max_abs_error <= 1e-9 * max(1.0, plain.output_scale)


def test_the_count_precheck_agrees_with_the_features(source):
    """Coverage with the count-space pre-check and from every prefix's features: the same
    covered sequences, the same residuals where uncovered, round-off where covered."""
    fitted = solve.fit(_traces(source, 40, seed=2), minimise=False)
    domain = _traces(source, 400, seed=3).tokens
    fast = sequence_residuals(fitted, domain)
    slow = sequence_residuals(dataclasses.replace(fitted, count_spans=None), domain)
    assert (fitted.count_spans.residuals(domain) <= 1e-12).any()  # the pre-check decided some
    assert ((fast > 1e-8) == (slow > 1e-8)).all()
    assert (slow > 1e-8).any() and (slow <= 1e-8).any()  # both kinds were checked
    assert np.abs(fast - slow)[slow <= 1e-8].max() <= 1e-12
    assert np.allclose(fast[slow > 1e-8], slow[slow > 1e-8], rtol=1e-9)


def test_a_token_never_trained_on_is_not_counted_covered(source):
    traces = _traces(source, 50, seed=4)
    index = CountSpanIndex(PrefixCounts(traces.tokens))
    stranger = np.zeros((1, traces.tokens[0].shape[1]))
    stranger[0, 0] = 7.0  # a row no program emits
    residuals = index.residuals([traces.tokens[0], np.concatenate([stranger,
                                                                   traces.tokens[0]])])
    first = traces.tokens[0].shape[0]
    assert np.all(residuals[:first] <= 1e-12)  # a training sequence lies in its own spans
    assert np.all(np.isinf(residuals[first:]))  # every prefix after the stranger: unknown
