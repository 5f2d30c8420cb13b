"""Count spans for data design (learner/counts.py, `CountCover`): a word whose prefixes'
count vectors lie in the training count spans adds no feature direction."""

from __future__ import annotations

import numpy as np
import pytest

from lat.api import shipped_program
from lat.compiler import compile_source
from lat.learner import solve
from lat.learner.certificate import COVERAGE_TOL, sequence_residuals
from lat.learner.counts import CountCover
from lat.learner.domain import input_lengths, sample_words_of_lengths
from lat.learner.traces import record_traces
from tests.test_learner import random_automaton


def _tokens(model, count, seed, max_len=12):
    words = sample_words_of_lengths(model.interface, count, input_lengths(model, max_len),
                                    np.random.default_rng(seed))
    return record_traces(model, words).tokens


@pytest.fixture(params=["automaton", "machine"])
def source(request):
    if request.param == "automaton":
        return random_automaton(8, 3, seed=4)
    return compile_source(shipped_program("increment.lat"), "increment.lat").model


def test_a_cover_holds_what_was_added_and_is_opened_by_a_new_token(source):
    tokens = _tokens(source, 30, seed=1)
    cover = CountCover(2048)
    assert cover.opens(tokens[:5]).all()  # an empty cover: every nonempty word opens it
    grew = [cover.add(t) for t in tokens]
    assert grew[0] and cover.dimension > 0
    assert not cover.opens(tokens).any()  # everything added lies in its own spans
    assert not any(cover.add(t) for t in tokens[:5])  # adding again adds nothing
    stranger = np.zeros((1, tokens[0].shape[1]))
    stranger[0, 0] = 7.0  # a row no program emits: a new vocabulary id
    opened = cover.opens([tokens[0], np.concatenate([tokens[0], stranger])])
    assert opened.tolist() == [False, True]
    assert not cover.opens(tokens).any()  # the old spans grew a zero column and still hold


def test_covering_the_counts_covers_the_features(source):
    """The design's soundness: train on the words that opened the cover, and every word
    the cover was shown lies in the training features' span (the certificate's test)."""
    pool = _tokens(source, 300, seed=2)
    cover = CountCover(2048)
    chosen = [t for t in pool if cover.add(t)]
    assert len(chosen) < len(pool)  # the cover saves traces, else the test says nothing
    fitted = solve.fit([(t, np.zeros((t.shape[0], 1))) for t in chosen], heads=False)
    assert sequence_residuals(fitted, pool).max() <= COVERAGE_TOL


def test_a_vocabulary_past_the_bound_stops_the_cover_answering(source):
    tokens = _tokens(source, 20, seed=3)
    cover = CountCover(max_vocabulary=2)
    cover.add(tokens[0])
    assert cover.full
    assert cover.opens(tokens).all()  # it no longer claims anything covered
    assert not cover.add(tokens[1])
