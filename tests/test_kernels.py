"""Every MHLA form equals the loop-form definition (fp32, relative 1e-5)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lat.runtime.kernels import (
    RecurrentState,
    mhla,
    mhla_chunked,
    mhla_parallel,
    mhla_recurrent,
    mhla_reference,
    recurrent_step,
)


def random_problem(B: int, T: int, d: int, H: int, d_out: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    Z = torch.randn(B, T, d, generator=generator)
    V = torch.randn(H, d_out, d, generator=generator) / d
    Q = torch.randn(H, d, d, generator=generator) / d
    return Z, V, Q


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().clamp(min=1.0)
    assert (actual - expected).abs().max() <= 1e-5 * scale


@given(
    B=st.integers(1, 3), T=st.integers(1, 13), d=st.integers(1, 7), H=st.integers(1, 3),
    d_out=st.integers(1, 5), seed=st.integers(0, 2**31), normalise=st.booleans(),
)
def test_forms_equal_reference(B, T, d, H, d_out, seed, normalise):
    Z, V, Q = random_problem(B, T, d, H, d_out, seed)
    expected = mhla_reference(Z, V, Q, 0.5, normalise)
    for form in (mhla_parallel, mhla_recurrent):
        assert_close(form(Z, V, Q, 0.5, normalise), expected)
    assert_close(mhla_chunked(Z, V, Q, 0.5, normalise, chunk=4), expected)


def test_reference_matches_closed_form():
    """y_t = Σ_h V_h S_t Q_h z_t with S_t = Σ_{s≤t} z_s z_sᵀ, written independently."""
    Z, V, Q = random_problem(2, 5, 4, 2, 3, seed=7)
    S = torch.cumsum(Z[:, :, :, None] * Z[:, :, None, :], dim=1)
    expected = torch.einsum("hij,btjk,hkl,btl->bti", V, S, Q, Z)
    assert_close(mhla_reference(Z, V, Q), expected)


@pytest.mark.parametrize("H,d_out,d", [(1, 2, 9), (3, 4, 5)])
def test_both_state_layouts_agree(H, d_out, d):
    Z, V, Q = random_problem(2, 6, d, H, d_out, seed=3)
    state = RecurrentState.empty(2, V, Z.dtype)
    expected_layout = "value_key" if H * d_out < d else "shared"
    assert state.layout == expected_layout
    assert_close(mhla_recurrent(Z, V, Q), mhla_reference(Z, V, Q))


def test_inactive_rows_keep_their_state():
    Z, V, Q = random_problem(2, 4, 3, 1, 2, seed=5)
    state = RecurrentState.empty(2, V, Z.dtype)
    active = torch.tensor([True, False])
    for t in range(4):
        recurrent_step(state, Z[:, t], V, Q, active=active)
    only_first = mhla_reference(Z[:1], V, Q)
    fresh = RecurrentState.empty(1, V, Z.dtype)
    for t in range(4):
        y = recurrent_step(fresh, Z[:1, t], V, Q)
    assert_close(y, only_first[:, -1])
    assert torch.count_nonzero(state.tensor[1]) == 0


def test_split_and_resume():
    """Chunked prefill of the first half, then recurrent decode == prefill of everything."""
    Z, V, Q = random_problem(2, 11, 5, 2, 3, seed=11)
    full = mhla(Z, V, Q, kernel="chunked")
    state = RecurrentState.empty(2, V, Z.dtype)
    state.layout, state.tensor = "shared", (Z[:, :6].transpose(1, 2) @ Z[:, :6])
    state.length = 6
    tail = torch.stack([recurrent_step(state, Z[:, t], V, Q) for t in range(6, 11)], dim=1)
    assert_close(tail, full[:, 6:])


def test_empty_sequence_and_unknown_kernel():
    Z, V, Q = random_problem(1, 0, 3, 1, 2, seed=0)
    for kernel in ("parallel", "chunked", "recurrent", "reference"):
        assert mhla(Z, V, Q, kernel=kernel).shape == (1, 0, 2)
    with pytest.raises(ValueError, match="unknown kernel"):
        mhla(Z, V, Q, kernel="magic")
