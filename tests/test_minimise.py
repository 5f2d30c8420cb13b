"""Minimal heads: the fewest heads with the learned function (lat.learner.minimise)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lat.learner import learn
from lat.learner.heads import head_coefficients, recover_heads
from lat.learner.minimise import constraints, minimise_heads
from lat.learner.solve import fit, mhla_outputs
from lat.learner.traces import record_traces, sample_words
from tests.test_learner import PARITY, automaton_model, random_automaton


def test_minimise_heads_finds_a_single_random_head():
    rng = np.random.default_rng(4)
    d, d_out = 4, 2
    V, Q = rng.standard_normal((1, d_out, d)), rng.standard_normal((1, d, d))
    p = head_coefficients(V, Q)
    assert recover_heads(p, d, d_out)[0].shape[0] > 1  # Algorithm 1's even split
    V2, Q2 = minimise_heads(p, d, d_out)
    assert V2.shape == (1, d_out, d)
    np.testing.assert_allclose(head_coefficients(V2, Q2), p, atol=1e-10 * np.abs(p).max())


def test_minimise_heads_gives_up_above_max_heads():
    rng = np.random.default_rng(5)
    d, d_out = 3, 3
    V, Q = rng.standard_normal((3, d_out, d)), rng.standard_normal((3, d, d))
    assert minimise_heads(head_coefficients(V, Q), d, d_out, max_heads=1) is None


def test_the_sweep_budget_ends_a_search_at_the_same_point_and_says_so():
    rng = np.random.default_rng(6)
    d, d_out = 4, 3
    V, Q = rng.standard_normal((2, d_out, d)), rng.standard_normal((2, d, d))
    p = head_coefficients(V, Q)
    found = {}
    for budget in (3, 3, None):
        log = {}
        heads = minimise_heads(p, d, d_out, sweeps=budget, log=log)
        found.setdefault(budget, []).append((heads, log))
    (first, log_a), (second, log_b) = found[3]
    assert first is None and second is None  # 3 sweeps reach no 1- or 2-head fit
    assert log_a == log_b == {"sweeps": 3, "ended": "sweep budget"}
    heads, log = found[None][0]
    assert heads is not None and heads[0].shape[0] == 2
    assert log["ended"] == "found" and log["sweeps"] > 3


def test_random_mhla_d16_h4_is_learned_with_exactly_four_heads():
    """Issue 5: a random MHLA (d = 16, H = 4, Gaussian tokens) learned to max error ≤ 1e-8
    with exactly 4 heads; enough prefixes (2,560 > 2,176 features) for λ_min_full > 0."""
    from lat.learner.certificate import certify

    rng = np.random.default_rng(0)
    d, H, T = 16, 4, 64
    V = rng.standard_normal((H, 1, d)) / np.sqrt(d)
    Q = rng.standard_normal((H, d, d)) / np.sqrt(d)
    tokens = [rng.standard_normal((T, d)) / np.sqrt(T) for _ in range(40)]
    started = time.perf_counter()
    fitted = fit(list(zip(tokens, mhla_outputs(V, Q, tokens), strict=True)))
    elapsed = time.perf_counter() - started
    print(f"\nrandom MHLA d=16 H=4: {fitted.heads_before_minimising} heads before "
          f"minimising, {fitted.heads} after; {elapsed:.1f}s {fitted.seconds}")
    assert fitted.heads == H
    assert fitted.heads_before_minimising == d  # Algorithm 1: rank of the even split
    assert fitted.features_used == fitted.features_total == 2176
    assert fitted.train_max_abs_error <= 1e-8
    fresh = [rng.standard_normal((T, d)) / np.sqrt(T) for _ in range(10)]
    error = max(float(np.abs(a - b).max()) for a, b in zip(
        mhla_outputs(fitted.V, fitted.Q, fresh), mhla_outputs(V, Q, fresh), strict=True))
    assert error <= 1e-8
    certificate = certify(fitted, fresh)
    assert certificate.lambda_min_full > 0 and certificate.identifiable


def parity_fit(minimise: bool = True):
    model = automaton_model(**PARITY)
    words = sample_words(model.interface, 300, 12, np.random.default_rng(1))
    return model, record_traces(model, words), fit(record_traces(model, words),
                                                    minimise=minimise)


def test_compiled_heads_meet_the_constraints_but_not_the_fitted_coefficients():
    """The constraints are 'same outputs on every training prefix', not 'same p': the
    compiled parity head differs from the min-norm fit inside the support (the data's
    null space) and still meets them; a perturbed head does not."""
    model, _, fitted = parity_fit(minimise=False)
    problem = constraints(fitted.coefficients, fitted.blocks, fitted.support_block,
                          fitted.support_position)
    V = model.V.numpy().astype(np.float64)
    Q = model.Q.numpy().astype(np.float64)
    from lat.learner.solve import support_coefficients

    compiled = support_coefficients(V, Q, fitted.support)
    assert np.abs(compiled - fitted.coefficients.values).max() > 1e-3  # differs inside
    scale = np.abs(problem.target).max()
    assert np.abs(problem.project(compiled) - problem.target).max() <= 1e-12 * scale
    bent = support_coefficients(V, Q + 1e-3 * np.eye(Q.shape[1]), fitted.support)
    assert np.abs(problem.project(bent) - problem.target).max() > 1e-6 * scale


def test_without_the_null_space_parity_keeps_more_heads():
    """Only the data's null space lets one head reproduce parity's min-norm fit: with
    exact coefficient constraints (antisymmetric part and off-support features free) the
    search finds no single head."""
    _, _, fitted = parity_fit(minimise=False)
    assert fitted.heads > 1
    exact = minimise_heads(fitted.coefficients, fitted.d, fitted.d_out, max_heads=1)
    assert exact is None
    with_data = minimise_heads(fitted.coefficients, fitted.d, fitted.d_out,
                               blocks=fitted.blocks, support_block=fitted.support_block,
                               support_position=fitted.support_position, max_heads=1,
                               initial=(fitted.V, fitted.Q))
    assert with_data is not None and with_data[0].shape[0] == 1


def test_minimised_heads_compute_the_same_outputs_on_training_and_domain():
    model, traces, plain = parity_fit(minimise=False)
    _, _, small = parity_fit(minimise=True)
    assert small.heads == 1 < plain.heads == small.heads_before_minimising
    assert small.train_max_abs_error <= 1e-9 * max(1.0, small.output_scale)
    fresh = sample_words(model.interface, 200, 12, np.random.default_rng(9))
    tokens = [np.asarray(t, np.float64) for t in record_traces(model, fresh).tokens]
    for a, b in zip(mhla_outputs(plain.V, plain.Q, tokens),
                    mhla_outputs(small.V, small.Q, tokens), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-8 * max(1.0, np.abs(a).max()))


@pytest.mark.parametrize("states, symbols, seed", [(6, 2, 3), (12, 3, 4)])
def test_relearned_automata_reach_the_compiled_head_count(states, symbols, seed):
    """Issue 5: for compiled programs the minimised heads reach the compiled H (1 for
    automata), and the one-head model is still equivalent and certified."""
    source = random_automaton(states, symbols, seed)
    result = learn(source, samples=400, max_len=24, domain_samples=400)
    print(f"\n{states}x{symbols}: heads {result.fit.heads_before_minimising} -> "
          f"{result.heads}, {result.fit.seconds}")
    assert result.fit.heads_before_minimising > 1
    assert result.heads == source.heads == 1
    assert result.equivalent and result.certificate.identifiable
    assert result.model.heads == 1
    assert torch.equal(torch.tensor(result.model.V.shape), torch.tensor((1, source.d_out,
                                                                          source.d)))


def test_learn_minimises_only_when_asked_and_reports_both_counts():
    source = automaton_model(**PARITY)
    kept = learn(source, samples=200, max_len=12, domain_samples=200, minimise=False)
    small = learn(source, samples=200, max_len=12, domain_samples=200)
    assert kept.heads == kept.fit.heads_before_minimising > 1
    assert small.heads == 1 and small.fit.heads_before_minimising == kept.heads
    assert "minimise_heads" in small.to_json()["seconds"]
    assert small.to_json()["heads_before_minimising"] == kept.heads
    assert small.equivalent and small.certificate.identifiable


def test_cli_learn_shows_heads_before_and_after(tmp_path, capsys):
    from lat.api import shipped_program
    from lat.cli import main

    path = tmp_path / "parity.lat"
    path.write_text(shipped_program("parity.lat"))
    assert main(["learn", str(path)]) == 0
    assert "1 (Algorithm 1: 2)" in capsys.readouterr().out
    assert main(["learn", str(path), "--no-minimise", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["heads"] == report["heads_before_minimising"] == 2


def test_minimal_heads_keeps_algorithm_1_when_fewer_heads_miss_the_outputs(monkeypatch):
    """A head set that meets the search's tolerance but not the training outputs (here a
    stub returning a wrong head) is refused: the fit keeps Algorithm 1's heads."""
    import lat.learner.minimise as minimise
    import lat.learner.solve as solve

    model, traces, plain = parity_fit(minimise=False)
    wrong = (np.ones((1, plain.d_out, plain.d)), np.eye(plain.d)[None])
    monkeypatch.setattr(minimise, "minimise_heads", lambda *args, **kwargs: wrong)
    kept = solve.minimal_heads(plain, traces)
    assert kept.heads == plain.heads
    assert kept.train_max_abs_error == plain.train_max_abs_error
