"""Head recovery: coefficients → W → block SVDs → heads that compute the same outputs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lat.learner.features import Coefficients, dense_features, n_features
from lat.learner.heads import head_coefficients, lift, recover_heads
from lat.runtime.forms import mhla_reference


def outputs(V, Q, Z):
    return mhla_reference(torch.from_numpy(Z)[None], torch.from_numpy(V),
                          torch.from_numpy(Q))[0].numpy()


def test_head_coefficients_are_the_linearisation():
    rng = np.random.default_rng(0)
    V, Q = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 4))
    Z = rng.standard_normal((9, 4))
    np.testing.assert_allclose(dense_features(Z) @ head_coefficients(V, Q), outputs(V, Q, Z),
                               rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("seed", range(4))
def test_single_random_head_at_d4_reproduces_outputs(seed):
    rng = np.random.default_rng(seed)
    d, d_out = 4, 4
    V, Q = rng.standard_normal((1, d_out, d)), rng.standard_normal((1, d, d))
    p = head_coefficients(V, Q)
    V2, Q2 = recover_heads(p, d, d_out)
    assert V2.dtype == np.float64 and V2.shape[1:] == (d_out, d) and Q2.shape[1:] == (d, d)
    # The even split of pair coefficients is generally of higher rank (PAPER_NOTES §2).
    assert 1 <= V2.shape[0] <= d * d
    np.testing.assert_allclose(head_coefficients(V2, Q2), p, rtol=1e-10, atol=1e-12)
    for _ in range(3):
        Z = rng.standard_normal((int(rng.integers(1, 12)), d))
        np.testing.assert_allclose(outputs(V2, Q2, Z), outputs(V, Q, Z), rtol=1e-10,
                                   atol=1e-10)


def test_lift_splits_pairs_evenly():
    d, d_out = 2, 1
    dense = np.zeros((n_features(d), d_out))
    dense[1 * d + 0] = 4.0  # pair {0,1}, l = 0
    dense[0] = 3.0  # pair {0,0}, l = 0
    rows, cols, vals = lift(Coefficients.from_dense(dense, d))
    W = np.zeros((d_out * d, d * d))
    np.add.at(W, (rows, cols), vals)
    expected = np.zeros_like(W)
    expected[0, 0 * d + 0] = 3.0  # (a=0, j=0), (k=0, l=0)
    expected[0, 1 * d + 0] = 2.0  # (0,0),(1,0)
    expected[1, 0 * d + 0] = 2.0  # (0,1),(0,0)
    np.testing.assert_array_equal(W, expected)


def test_zero_coefficients_give_one_zero_head():
    V, Q = recover_heads(np.zeros((n_features(3), 2)), 3, 2)
    assert V.shape == (1, 2, 3) and Q.shape == (1, 3, 3)
    assert not V.any() and not Q.any()


def test_wrong_sizes_are_refused():
    with pytest.raises(ValueError):
        recover_heads(Coefficients(3, 2, np.array([0]), np.ones((1, 2))), 4, 2)


def one_hot_program(d, d_out, rng):
    """Coefficients of the kind an automaton fit gives: only S[j,j]·z[l] features."""
    support = np.array(sorted({int(((j * d - j * (j - 1) // 2) * d) + l)
                               for j in range(d) for l in range(d)}))
    values = rng.standard_normal((support.size, d_out))
    return Coefficients(d, d_out, support, values), support


def test_packing_shares_heads_only_off_the_support():
    rng = np.random.default_rng(1)
    d, d_out = 6, 3
    coefficients, support = one_hot_program(d, d_out, rng)
    V1, Q1 = recover_heads(coefficients, d, d_out)
    V2, Q2 = recover_heads(coefficients, d, d_out, support=support)
    assert V1.shape[0] == d * min(d_out, d)  # one block per j, each of full rank
    assert V2.shape[0] == min(d_out, d)  # packed: cross terms are S[j,j'] with j ≠ j'
    p1, p2 = head_coefficients(V1, Q1), head_coefficients(V2, Q2)
    np.testing.assert_allclose(p1[support], coefficients.values, atol=1e-12)
    np.testing.assert_allclose(p2[support], coefficients.values, atol=1e-12)
    off = np.setdiff1d(np.arange(n_features(d)), support)
    assert np.abs(p1[off]).max() < 1e-12  # Algorithm 1's heads: exactly the coefficients
    assert np.abs(p2[off]).max() > 1e-3  # packing moved only unconstrained coefficients
    Z = np.eye(d)[rng.integers(0, d, size=20)]  # one-hot tokens: S stays diagonal
    np.testing.assert_allclose(outputs(V2, Q2, Z), outputs(V1, Q1, Z), rtol=1e-10, atol=1e-10)


def test_packing_refuses_cross_terms_on_the_support():
    rng = np.random.default_rng(2)
    d, d_out = 4, 2
    coefficients, support = one_hot_program(d, d_out, rng)
    everything = np.arange(n_features(d))  # every feature was seen: nothing may be shared
    V, Q = recover_heads(coefficients, d, d_out, support=everything)
    assert V.shape[0] == d * d_out
    np.testing.assert_allclose(head_coefficients(V, Q), coefficients.dense(), atol=1e-12)


def test_large_sparse_w_is_fast():
    """20-state × 4-symbol automaton sizes: W is 1,782 × 6,561 but splits into 81 blocks."""
    rng = np.random.default_rng(3)
    d, d_out = 81, 22
    coefficients, support = one_hot_program(d, d_out, rng)
    started = time.perf_counter()
    V, Q = recover_heads(coefficients, d, d_out, support=support)
    elapsed = time.perf_counter() - started
    print(f"recover_heads on W {d_out * d}×{d * d}: {elapsed:.2f}s, {V.shape[0]} heads")
    assert V.shape == (d_out, d_out, d)
    j = np.arange(d)
    diagonal_features = (j * d - j * (j - 1) // 2) * d  # {j,j}, l = 0
    p = np.einsum("haj,hjl->jla", V, Q)  # p[{j,j},l] = Σ_h V[a,j] Q[j,l]
    np.testing.assert_allclose(p[:, 0, :], coefficients.values[np.searchsorted(
        support, diagonal_features)], atol=1e-10)
