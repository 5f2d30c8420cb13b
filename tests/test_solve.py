"""The block-wise minimum-norm least squares of Algorithm 1."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lat.compiler.lower.automaton import lower_automaton
from lat.learner.features import dense_features, n_features, prefix_features
from lat.learner.heads import head_coefficients
from lat.learner.solve import fit, mhla_outputs
from lat.learner.traces import record_traces, sample_words
from lat.runtime.forms import mhla_reference
from lat.runtime.model import CompiledModel


def gaussian_teacher(seed, d=4, d_out=3, heads=2, sequences=60, max_len=10):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((heads, d_out, d)) / np.sqrt(d)
    Q = rng.standard_normal((heads, d, d)) / np.sqrt(d)
    tokens = [rng.standard_normal((int(rng.integers(1, max_len + 1)), d))
              for _ in range(sequences)]
    return V, Q, [(Z, y) for Z, y in zip(tokens, mhla_outputs(V, Q, tokens), strict=True)]


def automaton_model(seed, n_states=4, n_symbols=2):
    rng = np.random.default_rng(seed)
    states = tuple(f"q{i}" for i in range(n_states))
    alphabet = tuple("abcdefgh"[:n_symbols])
    table = {(q, a): states[rng.integers(n_states)] for q in states for a in alphabet}
    spec = SimpleNamespace(name="random", alphabet=alphabet, states=states, start=states[0],
                           accept=frozenset(states[::2]), transition_table=table)
    lowered = lower_automaton(spec)
    return CompiledModel(torch.from_numpy(lowered.V), torch.from_numpy(lowered.Q),
                         lowered.interface)


def test_mhla_outputs_match_the_reference_loop():
    V, Q, pairs = gaussian_teacher(0, sequences=5)
    for Z, y in pairs:
        expected = mhla_reference(torch.from_numpy(Z)[None], torch.from_numpy(V),
                                  torch.from_numpy(Q))[0].numpy()
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_gaussian_teacher_is_learned_exactly(seed):
    V, Q, pairs = gaussian_teacher(seed)
    result = fit(pairs)
    assert result.samples == sum(Z.shape[0] for Z, _ in pairs)
    assert result.features_total == result.features_used == n_features(4)
    assert len(result.blocks) == 1 and result.blocks[0].rank == n_features(4)
    assert result.train_max_abs_error <= 1e-8
    assert result.coefficient_max_abs_error <= 1e-8
    # The data identify the coefficients: they are the teacher's p(Θ) (Corollary A.4).
    np.testing.assert_allclose(result.coefficients.dense(), head_coefficients(V, Q),
                               rtol=1e-8, atol=1e-9)


def test_min_norm_solution_equals_lstsq_on_dense_features():
    model = automaton_model(1)
    traces = record_traces(model, sample_words(model.interface, 40, 8,
                                               np.random.default_rng(0)))
    result = fit(traces)
    X = np.concatenate([dense_features(Z) for Z in traces.tokens])
    Y = np.concatenate(traces.outputs)
    expected, *_ = np.linalg.lstsq(X, Y, rcond=None)  # minimum-norm least squares
    np.testing.assert_allclose(result.coefficients.dense(), expected, atol=1e-9)
    assert result.train_max_abs_error <= 1e-9


def test_one_hot_data_split_into_blocks_with_every_sample_in_one():
    model = automaton_model(2, n_states=5, n_symbols=3)
    traces = record_traces(model, sample_words(model.interface, 200, 20,
                                               np.random.default_rng(1)))
    result = fit(traces)
    assert len(result.blocks) > 1
    assert sum(b.samples for b in result.blocks) == result.samples  # no featureless rows
    assert result.featureless_samples == 0
    columns = np.concatenate([b.columns for b in result.blocks])
    assert np.array_equal(np.sort(columns), result.support)
    assert result.features_used == result.support.size < result.features_total
    # Every training row's columns sit in one block.
    block_of = dict(zip(result.support.tolist(), result.support_block.tolist(), strict=True))
    for Z in traces.tokens[:20]:
        rows, cols, _ = prefix_features(Z)
        for r in np.unique(rows):
            assert len({block_of[c] for c in cols[rows == r].tolist()}) == 1
    # Singular blocks (the flow constraints of a path through the automaton) are expected;
    # the kept eigenvalues sit above the cut-off.
    for block in result.blocks:
        assert np.all(block.kept_eigenvalues > block.cutoff)
        assert block.basis.shape == (block.columns.size, block.rank)
        np.testing.assert_allclose(block.basis.T @ block.basis, np.eye(block.rank), atol=1e-10)
    assert result.train_max_abs_error <= 1e-9


def test_dual_path_when_samples_are_fewer_than_features():
    rng = np.random.default_rng(4)
    V, Q = rng.standard_normal((1, 2, 4)), rng.standard_normal((1, 4, 4))
    tokens = [rng.standard_normal((6, 4))]  # 6 samples, 40 features: one dual block
    pairs = list(zip(tokens, mhla_outputs(V, Q, tokens), strict=True))
    result = fit(pairs)
    assert result.blocks[0].dual
    X = dense_features(tokens[0])
    expected, *_ = np.linalg.lstsq(X, pairs[0][1], rcond=None)
    np.testing.assert_allclose(result.coefficients.dense(), expected, atol=1e-9)
    assert result.train_max_abs_error <= 1e-9
    assert result.blocks[0].rank == 6
    np.testing.assert_allclose(result.blocks[0].basis.T @ result.blocks[0].basis, np.eye(6),
                               atol=1e-10)


def test_unpacked_heads_are_the_rank_of_w():
    model = automaton_model(3)
    traces = record_traces(model, sample_words(model.interface, 100, 12,
                                               np.random.default_rng(2)))
    packed = fit(traces, minimise=False)
    plain = fit(traces, pack_heads=False, minimise=False)
    assert packed.heads <= plain.heads
    assert packed.train_max_abs_error <= 1e-9 and plain.train_max_abs_error <= 1e-9


def test_empty_or_inconsistent_data_is_refused():
    with pytest.raises(ValueError, match="no training samples"):
        fit([])
    with pytest.raises(ValueError, match="no training samples"):
        fit([(np.zeros((0, 3)), np.zeros((0, 2)))])
    with pytest.raises(ValueError):
        fit([(np.zeros((3, 3)), np.zeros((2, 2)))])


def test_progress_is_reported():
    _, _, pairs = gaussian_teacher(5, sequences=10)
    calls = []
    fit(pairs, progress=lambda phase, done, total: calls.append((phase, done, total)))
    assert ("features", 10, 10) in calls and ("solve", 1, 1) in calls


def test_a_block_past_the_dense_limit_is_a_resource_error_that_says_what_to_do(
        monkeypatch, tmp_path, capsys):
    from lat.learner import solve
    from lat.runtime.errors import ResourceError
    from tests.test_cli import PROGRAMS, lat

    model = automaton_model(3)
    traces = record_traces(model, sample_words(model.interface, 40, 8,
                                               np.random.default_rng(0)))
    monkeypatch.setattr(solve, "DENSE_LIMIT", 4)
    with pytest.raises(solve.BlockTooLarge) as refused:
        fit(traces)
    assert isinstance(refused.value, ResourceError)  # the CLI's exit 1, not a bug
    assert "--max-traces" in str(refused.value)
    code, _, err = lat("learn", str(PROGRAMS / "parity.lat"), "-o",
                       str(tmp_path / "learned.safetensors"), capsys=capsys)
    assert code == 1 and "too large to solve densely" in err and "bug" not in err


def test_a_design_refit_past_the_dense_limit_keeps_the_first_fit(monkeypatch):
    """Count design fits once after its rounds; refused there, the first fit stands with
    the traces it saw, and the report says so."""
    import importlib

    from lat.api import shipped_program
    from lat.compiler import compile_source

    learn_module = importlib.import_module("lat.learner.learn")  # the module, not the function

    source = compile_source(shipped_program("increment.lat"), "increment.lat").model
    real_fit, calls = learn_module._fit, []

    def refuse_the_refit(traces, *args):
        calls.append(len(traces))
        if len(calls) > 1:
            raise learn_module.BlockTooLarge("a connected block is too large (test)")
        return real_fit(traces, *args)

    monkeypatch.setattr(learn_module, "_fit", refuse_the_refit)
    result = learn_module.learn(source, exact=False, samples=5, max_len=8, domain_samples=100)
    assert calls[0] == 5 and calls[1] > 5  # the design added words, the refit was refused
    assert result.traces == 5 and result.fit.sequences == 5
    assert any("the first fit, of 5 traces, stands" in line
               for line in result.design["memory_notes"])
