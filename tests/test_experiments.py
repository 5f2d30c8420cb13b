"""Experiments (lat.experiments): each quick mode on an even tinier setting; keys and the
inequalities each experiment must show (never timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lat.experiments import EXPERIMENTS, UnknownExperiment, run_experiment


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """As run_experiment does: the experiments' tiny tensors run faster on one thread, and
    far faster on a loaded 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registry_and_unknown_name(tmp_path):
    assert {"kv-certificate", "random-mhla", "formal-languages",
            "universal-automaton", "icl-regression", "token-selection"} <= set(EXPERIMENTS)
    with pytest.raises(UnknownExperiment, match="unknown experiment 'nope'"):
        run_experiment("nope", quick=True, out=tmp_path)


@pytest.mark.slow  # ~1 min on the loaded 2-core machine
def test_kv_certificate(tmp_path):
    from lat.experiments import kv_certificate

    r = kv_certificate.run(quick=True, out=tmp_path, scale=0.1, sgd_heads=(1, 2))
    assert "erm_gap" not in json.dumps(r)  # replaced by measured quantities
    assert (tmp_path / "kv-certificate.png").stat().st_size > 0
    assert r["lambda_min_identifiable"] > 0.01
    assert r["lambda_min_unidentifiable"] < 1e-9
    assert r["ood_error_alg1_identifiable"] < 1e-12 < r["ood_error_alg1_unidentifiable"]
    # eq. 15: the learned p equals the truth only where the certificate holds
    assert r["p_space_error_identifiable"] < 1e-9 < r["p_space_error_unidentifiable"]
    for law in ("identifiable", "unidentifiable"):
        sgd = r[law]["sgd"]
        assert set(sgd) == {"1", "2"}
        for record in sgd.values():
            assert len(record["lr_grid"]) >= 4 and len(record["per_seed"]) >= 3
            assert isinstance(record["converged"], bool)
            assert record["p_space_error"]["min"] <= record["p_space_error"]["median"]


def test_p_space_error_is_zero_for_the_teacher_and_not_for_a_rescaled_one():
    from lat.experiments import kv_certificate as kv
    from lat.learner.heads import head_coefficients

    assert kv.p_space_error(head_coefficients(kv.V_TRUE, kv.Q_TRUE))[0] == 0.0
    # a trivial symmetry (cV, Q/c) keeps p; a different function does not
    assert kv.p_space_error(head_coefficients(2 * kv.V_TRUE, kv.Q_TRUE / 2))[0] < 1e-15
    assert abs(kv.p_space_error(head_coefficients(2 * kv.V_TRUE, kv.Q_TRUE))[1] - 1.0) < 1e-12


@pytest.mark.slow  # ~1 min on the loaded 2-core machine
def test_random_mhla(tmp_path):
    from lat.experiments import random_mhla

    r = random_mhla.run(quick=True, out=tmp_path, scale=0.2, dims=(4,), heads=(1, 2))
    assert set(r["results"]) == {"d=4,H=1", "d=4,H=2"}
    for row in r["results"].values():
        assert row["alg1_test_error"] <= 1e-8
        assert 1 <= row["heads_recovered"] <= row["d"]
        assert row["heads_minimal"] == row["H"]  # the minimiser reaches the teacher's H
        assert row["sgd_heads"] == sorted({row["H"], row["d"] ** 2})
        assert len(row["sgd_learning_rates"]) >= 4 and len(row["sgd_seeds"]) >= 3
        assert set(row["sgd_converged"]) == {str(h) for h in row["sgd_heads"]}
        for h in row["sgd_heads"]:
            spread = row["sgd"][str(h)]["test_error"]
            assert spread["min"] <= spread["median"] <= spread["max"]
    # below d²(d+1)/2 samples the regression is underdetermined, above it exact
    rows = r["alg1_error_vs_samples"]["d=4"]
    assert rows[0]["test_error"] > 1e-6 and rows[-1]["test_error"] < 1e-8
    assert (tmp_path / "random-mhla.png").exists()


@pytest.mark.slow  # ~1 min on the loaded 2-core machine
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


@pytest.mark.slow  # ~1 min on the loaded 2-core machine
def test_universal_automaton(tmp_path):
    from lat.experiments import universal_automaton

    r = universal_automaton.run(quick=True, out=tmp_path, scale=0.25, sizes=(2,))
    row = r["sizes"]["2"]
    assert row["traces_to_exact_alg1"] is not None
    assert row["traces_to_exact_min_heads"] is not None
    assert row["traces_to_certified_alg1"] is not None
    # a certified fit is exact on the runs it was certified on
    assert row["traces_to_certified_alg1"] >= row["traces_to_exact_alg1"]
    assert row["heldout_exact_fraction_alg1"] == 1.0
    assert 0.0 <= row["softmax_heldout_exact_fraction"] <= 1.0
    assert "softmax_traces_to_exact" in row
    assert "uses_head_search" in r


def test_teacher_forced_judgement_equals_rollout():
    """The softmax baseline is judged teacher-forced; for a learned linear model that
    judgement must agree run by run with executing it (rollout + reference interpreter)."""
    import numpy as np

    from lat.experiments import universal_automaton as ua
    from lat.experiments.common import mhla_causal
    from lat.experiments.softmax import judge
    from lat.learner.solve import fit

    rng = np.random.default_rng(5)
    train = ua._record(3, 6, 1, 12, rng, "t")
    held = ua._record(3, 6, 8, 24, rng, "h")
    plain = fit([(t.tokens[0], t.outputs[0]) for _, t, _ in train], minimise=False)
    task = ua._task(held)
    outputs = [mhla_causal(z[None], plain.V, plain.Q)[0] for z in task.tokens]
    forced = sum(judge(outputs, task))
    assert forced == ua._heldout_exact(plain.V, plain.Q, held)
    assert 0 < forced < len(task.tokens)  # a case with both outcomes
    assert all(judge(task.outputs, task))  # the reference judges itself exact


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


ROOT = Path(__file__).resolve().parent.parent


def test_readme_results_agree_with_the_committed_json():
    """The README's Results section is exactly what `lat experiment report results`
    generates from the committed results/*.json: the numbers cannot drift."""
    from lat.experiments.report import differences, render, section

    generated = render(ROOT / "results")
    readme = section((ROOT / "README.md").read_text(encoding="utf-8"))
    assert not differences(generated, readme), "\n".join(differences(generated, readme))


def test_committed_results_carry_the_issue_12_figures():
    runs = {p.stem: json.loads(p.read_text()) for p in (ROOT / "results").glob("*.json")}
    assert set(runs) == set(EXPERIMENTS)
    for r in runs.values():
        assert r["machine"]["cores"] and r["machine"]["torch"] and r["seconds_total"] > 0
        assert r["size"] == "full" and r["quick"] is False  # results/ holds the full runs
        assert "uses_head_search" in r and "limitations" in r
    for row in runs["universal-automaton"]["sizes"].values():
        assert row["heldout_runs"] >= 1000
        for key in ("traces_to_exact_alg1", "traces_to_exact_min_heads",
                    "traces_to_certified_alg1", "softmax_traces_to_exact",
                    "softmax_heldout_exact_fraction"):
            assert key in row
    kv = runs["kv-certificate"]
    assert "erm_gap" not in json.dumps(kv)
    assert {"p_space_error_identifiable", "p_space_error_unidentifiable"} <= set(kv)
    assert set(kv["identifiable"]["sgd"]) == {"1", "2", "4", "8"}
    for row in runs["random-mhla"]["results"].values():
        assert row["d"] ** 2 in row["sgd_heads"]
        assert len(row["sgd_learning_rates"]) >= 4 and len(row["sgd_seeds"]) >= 3
        assert "sgd_converged" in row


def test_committed_quick_runs_are_quick_and_complete():
    """results/quick/ holds one `--quick` run of every experiment: the README's quick-total
    line is generated from them."""
    quick = {p.stem: json.loads(p.read_text()) for p in (ROOT / "results" / "quick").glob(
        "*.json")}
    assert set(quick) == set(EXPERIMENTS)
    assert all(r["quick"] is True and r["size"] == "quick" for r in quick.values())
    assert all(r["seconds_total"] > 0 and r["cpu_seconds"] > 0 for r in quick.values())


def test_report_states_the_quick_total_against_the_target(tmp_path):
    from lat.experiments.report import render

    (tmp_path / "quick").mkdir()
    for path in (ROOT / "results").glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    for seconds, verdict in ((10.0, "within"), (100.0, "over")):
        for path in (ROOT / "results").glob("*.json"):
            r = json.loads(path.read_text())
            r["seconds_total"] = seconds
            (tmp_path / "quick" / path.name).write_text(json.dumps(r))
        line = next(x for x in render(tmp_path).splitlines() if x.startswith("Quick size"))
        assert f"together {6 * seconds:.0f} s wall" in line
        assert f"{verdict} the 5-minute target" in line


def test_report_cli_check_passes_and_fails(tmp_path, capsys):
    from lat.cli import main
    from lat.experiments.report import render, section, splice

    text = render(ROOT / "results")
    readme = tmp_path / "README.md"
    readme.write_text(splice("# title\n\n## Results\n\nold\n\n## Layout\n\nrest\n", text))
    assert section(readme.read_text()) == text
    assert main(["experiment", "report", str(ROOT / "results"), "--check", str(readme)]) == 0
    readme.write_text(readme.read_text().replace("| 2 |", "| 20 |", 1))
    assert main(["experiment", "report", str(ROOT / "results"), "--check", str(readme)]) == 1
    assert "+" in capsys.readouterr().out  # the diff
    assert main(["experiment", "report", str(tmp_path / "none")]) == 2
    assert main(["experiment", "report"]) == 2
