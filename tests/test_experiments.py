"""Experiments (lat.experiments): each quick mode on an even tinier setting; keys and the
must-show inequalities of Issue 6 (never timings)."""

from __future__ import annotations

import json

import pytest

from lat.experiments import EXPERIMENTS, UnknownExperiment, run_experiment


def test_registry_and_unknown_name(tmp_path):
    assert {"kv-certificate", "random-mhla", "formal-languages",
            "universal-automaton", "icl-regression", "token-selection"} <= set(EXPERIMENTS)
    with pytest.raises(UnknownExperiment, match="unknown experiment 'nope'"):
        run_experiment("nope", quick=True, out=tmp_path)


def test_kv_certificate(tmp_path):
    r = run_experiment("kv-certificate", quick=True, out=tmp_path, scale=0.25)
    assert json.loads((tmp_path / "kv-certificate.json").read_text()) == r
    assert (tmp_path / "kv-certificate.png").stat().st_size > 0
    assert r["lambda_min_identifiable"] > 0.01
    assert r["lambda_min_unidentifiable"] < 1e-9
    assert r["ood_error_alg1_identifiable"] < 1e-12 < r["ood_error_alg1_unidentifiable"]
    assert r["erm_gap_identifiable"] < 1e-12 < r["erm_gap_unidentifiable"]
    assert r["ood_error_sgd_identifiable"] < r["ood_error_sgd_unidentifiable"]


def test_random_mhla(tmp_path):
    from lat.experiments import random_mhla

    r = random_mhla.run(quick=True, out=tmp_path, scale=0.2, dims=(4, 8), heads=(1, 2))
    assert set(r["results"]) == {"d=4,H=1", "d=4,H=2", "d=8,H=1", "d=8,H=2"}
    for row in r["results"].values():
        for key in ("alg1_test_error", "sgd_test_error", "alg1_seconds", "sgd_seconds",
                    "heads_recovered"):
            assert key in row
        assert row["alg1_test_error"] <= 1e-8
        assert 1 <= row["heads_recovered"] <= row["d"]
        assert row["heads_minimal"] == row["H"]  # the minimiser reaches the teacher's H
    # below d²(d+1)/2 samples the regression is underdetermined, above it exact
    rows = r["alg1_error_vs_samples"]["d=4"]
    assert rows[0]["test_error"] > 1e-6 and rows[-1]["test_error"] < 1e-8
    assert (tmp_path / "random-mhla.png").exists()


def test_formal_languages(tmp_path):
    from lat.experiments import formal_languages

    r = formal_languages.run(quick=True, out=tmp_path, scale=0.25,
                             languages=("parity", "abab_star"))
    for name in ("parity", "abab_star"):
        row = r["languages"][name]
        assert row["compiled_exact"] is True
        assert row["learned_exact"] is True  # small regular languages generalise
        assert row["test_max_len"] == 500


@pytest.mark.parametrize("name", ["aa_star", "abab_star", "counter2", "counter3", "dyck1",
                                  "reset_dyck1"])
def test_language_programs_start_with_a_comment_and_compile(name):
    from lat.api import compile_file, verify
    from lat.experiments.formal_languages import programs_dir

    path = programs_dir() / f"{name}.lat"
    assert path.read_text().startswith(f"# {name}: accepts")
    assert verify(compile_file(path), max_len=12, samples=500).ok


def test_universal_automaton(tmp_path):
    from lat.experiments import universal_automaton

    r = universal_automaton.run(quick=True, out=tmp_path, scale=0.25, sizes=(2,))
    row = r["sizes"]["2"]
    assert row["samples_needed"] is not None
    assert row["heldout_exact_fraction"] == 1.0


def test_icl_regression(tmp_path):
    from lat.experiments import icl_regression

    r = icl_regression.run(quick=True, out=tmp_path, scale=0.1)
    for row in r["lengths"]:
        # the compiled Γ* matches its closed-form loss and beats plain GD
        assert abs(row["loss_gd_optimal"] - row["loss_gd_optimal_theory"]) < 0.1 * row[
            "loss_gd_optimal_theory"]
        assert row["loss_gd_optimal"] < row["loss_gd_identity"] < row["loss_zero"]
        # Algorithm 1 finds (close to) the optimal preconditioner
        assert row["loss_alg1"] < 1.2 * row["loss_gd_optimal"]
        assert row["alg1_preconditioner_rel_error"] < 0.3


def test_token_selection(tmp_path):
    from lat.experiments import token_selection

    r = token_selection.run(quick=True, out=tmp_path, scale=0.2)
    assert r["alg1_train_error"] < 1e-20
    for row in r["lengths"]:  # exact beyond the training length
        assert row["compiled_test_error"] < 1e-24
        assert row["alg1_test_error"] < 1e-20
        assert row["test_features_outside_training_support"] == 0
    assert max(row["n"] for row in r["lengths"]) > r["setting"]["train_length"]
