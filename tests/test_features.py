"""Reduced cubic features: sparse prefix features against the dense reference."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lat.learner import features
from lat.learner.features import (
    Coefficients,
    column_labels,
    dense_features,
    feature_index,
    feature_triples,
    n_features,
    pair_index,
    prefix_features,
)


def to_dense(rows, cols, vals, T, d):
    out = np.zeros((T, n_features(d)))
    np.add.at(out, (rows, cols), vals)
    return out


def one_hot_tokens(rng, T, d, per_token=1, signed=False):
    Z = np.zeros((T, d))
    for t in range(T):
        k = rng.integers(0, per_token + 1)
        chosen = rng.choice(d, size=min(k, d), replace=False)
        Z[t, chosen] = rng.choice([1.0, -1.0]) if signed else 1.0
    return Z


def test_column_order_is_the_documented_triangle():
    d = 5
    triples = feature_triples(d)
    assert triples.shape == (n_features(d), 3)
    assert n_features(d) == d * d * (d + 1) // 2
    for column, (j, k, l) in enumerate(triples):
        assert j <= k
        assert feature_index(j, k, l, d) == column == pair_index(j, k, d) * d + l
        assert feature_index(k, j, l, d) == column  # the unordered pair
    assert [tuple(t) for t in triples[:d + 1]] == [(0, 0, l) for l in range(d)] + [(0, 1, 0)]


@pytest.mark.parametrize("seed", range(12))
def test_sparse_matches_dense_on_one_hot(seed):
    rng = np.random.default_rng(seed)
    d, T = int(rng.integers(1, 9)), int(rng.integers(0, 30))
    Z = one_hot_tokens(rng, T, d, per_token=int(rng.integers(1, 4)), signed=seed % 2 == 1)
    rows, cols, vals = prefix_features(Z)
    assert np.all(vals != 0.0)
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == rows.size  # no repeats
    np.testing.assert_array_equal(to_dense(rows, cols, vals, T, d), dense_features(Z))


@given(st.integers(1, 5), st.integers(0, 12), st.integers(0, 2**32 - 1))
def test_sparse_matches_dense_on_gaussian(d, T, seed):
    Z = np.random.default_rng(seed).standard_normal((T, d))
    rows, cols, vals = prefix_features(Z)
    np.testing.assert_allclose(to_dense(rows, cols, vals, T, d), dense_features(Z),
                               rtol=1e-12, atol=1e-12)
    if T:
        assert rows.size == T * n_features(d)  # dense tokens fill every column


@pytest.mark.parametrize("seed", range(4))
def test_long_sequences_are_processed_in_chunks(seed, monkeypatch):
    monkeypatch.setattr(features, "CHUNK_ENTRIES", 5)  # a few positions per chunk
    rng = np.random.default_rng(seed)
    Z = one_hot_tokens(rng, 40, 4, per_token=2, signed=True) if seed % 2 else \
        rng.standard_normal((23, 3))
    rows, cols, vals = prefix_features(Z)
    np.testing.assert_allclose(to_dense(rows, cols, vals, *Z.shape), dense_features(Z),
                               rtol=1e-12, atol=1e-12)


def test_cancelled_pairs_are_dropped_and_zero_tokens_give_empty_rows():
    # S[0,1] = 1·1 + 1·(−1) = 0 after the second token: no feature {0,1} at row 1.
    Z = np.array([[1.0, 1.0, 0], [1.0, -1.0, 0], [0, 0, 0], [0, 0, 1.0]])
    rows, cols, vals = prefix_features(Z)
    np.testing.assert_array_equal(to_dense(rows, cols, vals, 4, 3), dense_features(Z))
    pair01 = {int(feature_index(0, 1, l, 3)) for l in range(3)}
    assert not pair01 & set(cols[rows == 1].tolist())
    assert pair01 & set(cols[rows == 0].tolist())
    assert 2 not in rows  # a zero token has no features at its position
    assert prefix_features(np.zeros((0, 3)))[0].size == 0


def test_coefficients_predict_matches_dense_product():
    rng = np.random.default_rng(3)
    d, T = 3, 9
    Z = rng.standard_normal((T, d))
    dense = rng.standard_normal((n_features(d), 2))
    dense[rng.random(n_features(d)) < 0.5] = 0.0
    coefficients = Coefficients.from_dense(dense, d)
    np.testing.assert_array_equal(coefficients.dense(), dense)
    rows, cols, vals = prefix_features(Z)
    np.testing.assert_allclose(coefficients.predict(rows, cols, vals, T),
                               dense_features(Z) @ dense, rtol=1e-12, atol=1e-12)


@given(st.integers(1, 40), st.integers(1, 60), st.integers(0, 2**32 - 1))
def test_column_labels_match_networkx(n_cols, n_rows, seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, size=n_rows)
    rows = np.repeat(np.arange(n_rows), sizes)
    cols = rng.integers(0, n_cols, size=rows.size)
    labels = column_labels(rows, cols, n_cols)
    graph = nx.Graph()
    graph.add_nodes_from(np.unique(cols).tolist())
    for r in range(n_rows):
        members = cols[rows == r].tolist()
        graph.add_edges_from(zip(members, members[1:], strict=False))
    expected = list(nx.connected_components(graph))
    assert labels.max() + 1 == len(expected)
    for component in expected:
        assert len({labels[c] for c in component}) == 1
    assert np.all(labels[np.setdiff1d(np.arange(n_cols), cols)] == -1)


def test_column_labels_long_chain_converges():
    n = 20_000
    order = np.random.default_rng(0).permutation(n)
    rows = np.repeat(np.arange(n - 1), 2)
    cols = order[np.stack([np.arange(n - 1), np.arange(1, n)], axis=1).ravel()]
    assert np.all(column_labels(rows, cols, n) == 0)
