"""SGD baseline: Adam on an H-head MHLA, on the same samples as the regression."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lat.learner.sgd import SGDResult, mhla_forward, train_sgd
from lat.learner.solve import mhla_outputs
from lat.runtime.forms import mhla_reference


def teacher_data(d=4, H=2, n=64, T=12, seed=0):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((H, 1, d)) / np.sqrt(d)
    Q = rng.standard_normal((H, d, d)) / np.sqrt(d)
    tokens = [rng.standard_normal((T, d)) / np.sqrt(T) for _ in range(n)]
    outputs = mhla_outputs(V, Q, tokens)
    return list(zip(tokens, outputs, strict=True))


def test_forward_is_the_definition():
    rng = np.random.default_rng(1)
    Z = torch.from_numpy(rng.standard_normal((2, 7, 3)))
    V = torch.from_numpy(rng.standard_normal((2, 2, 3)))
    Q = torch.from_numpy(rng.standard_normal((2, 3, 3)))
    torch.testing.assert_close(mhla_forward(Z, V, Q), mhla_reference(Z, V, Q))


def test_forward_is_differentiable_and_its_last_position_form_agrees():
    """SGD trains through the runtime's masked form: gradients reach V and Q, and the
    last-position form (the experiments' associative-memory loss) is its last row."""
    from lat.runtime.forms import mhla_masked

    rng = np.random.default_rng(2)
    Z = torch.from_numpy(rng.standard_normal((3, 6, 4)))
    V = torch.from_numpy(rng.standard_normal((2, 3, 4))).requires_grad_(True)
    Q = torch.from_numpy(rng.standard_normal((2, 4, 4))).requires_grad_(True)
    mhla_forward(Z, V, Q).square().sum().backward()
    assert V.grad is not None and Q.grad is not None and float(Q.grad.abs().sum()) > 0
    with torch.no_grad():
        torch.testing.assert_close(mhla_masked(Z, V, Q, last=True),
                                   mhla_reference(Z, V, Q)[:, -1])
        torch.testing.assert_close(mhla_masked(Z, V, Q, 0.5, True, last=True),
                                   mhla_reference(Z, V, Q, 0.5, True)[:, -1])


def test_adam_reduces_the_loss_and_reports_a_curve():
    data = teacher_data()
    result = train_sgd(data, 2, steps=300, lr=1e-2, seed=0)
    assert isinstance(result, SGDResult)
    assert result.V.shape == (2, 1, 4) and result.Q.shape == (2, 4, 4)
    times = [t for t, _ in result.history]
    assert times == sorted(times) and times[0] == 0.0
    assert result.history[-1][1] < 0.05 * result.history[0][1]
    assert result.steps == 300 and result.seconds > 0
    assert result.seconds_to(result.history[0][1]) == 0.0


def test_seeded_runs_are_deterministic_and_fp64_works():
    data = teacher_data(n=16)
    a = train_sgd(data, 1, epochs=3, lr=1e-2, seed=3, batch_size=8, dtype="fp64")
    b = train_sgd(data, 1, epochs=3, lr=1e-2, seed=3, batch_size=8, dtype=torch.float64)
    assert a.V.dtype == np.float64 and a.steps == 6
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.Q, b.Q)
    assert len(a.history) == 4  # start + one point per epoch


def test_stops_on_target_and_time_budget():
    data = teacher_data(n=16)
    r = train_sgd(data, 2, steps=10_000, lr=1e-2, target_mse=1e30, eval_every=1)
    assert r.steps == 1
    r = train_sgd(data, 2, steps=10_000_000, lr=1e-2, time_budget=0.2)
    assert r.steps < 10_000_000 and r.seconds >= 0.2


def test_refuses_empty_data_and_zero_heads():
    with pytest.raises(ValueError):
        train_sgd([(np.zeros((0, 2)), np.zeros((0, 1)))], 1)
    with pytest.raises(ValueError):
        train_sgd(teacher_data(n=2), 0)
