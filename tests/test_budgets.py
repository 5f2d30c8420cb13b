"""`lat learn`'s time and memory budgets, and the estimate they are checked against."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lat.learner import alternating as alternating_module
from lat.learner import budget as budget_module
from lat.learner import heads as heads_module
from lat.learner import learn
from lat.learner import minimise as minimise_module
from lat.learner.budget import Budget, OverBudget, estimate_fit
from lat.learner.heads import head_coefficients, recover_heads
from lat.learner.learn import LearnStopped
from lat.learner.solve import fit
from lat.learner.traces import record_traces
from tests.test_cli import PROGRAMS, lat
from tests.test_learner import PARITY, automaton_model


@pytest.fixture
def parity():
    return automaton_model(**PARITY)


def test_the_estimate_is_printed_before_the_fit_and_kept_in_the_report(capsys):
    code, out, err = lat("learn", str(PROGRAMS / "parity.lat"), "--json", capsys=capsys)
    assert code == 0
    assert "estimate: 1 traces" in err and "peak" in err
    report = json.loads(out)
    assert report["estimate"]["traces"] == report["traces"] == 1
    assert report["estimate"]["prefixes"] == report["samples"]
    assert report["stopped"] is None and report["skipped"] == []


def test_the_estimate_scales_the_pilot_to_every_trace(parity):
    words = [("0", "1") * 5, ("1",) * 7, ()]
    pilot = record_traces(parity, words)
    estimate = estimate_fit(pilot.tokens, parity.d_out, total=300)
    prefixes = sum(t.shape[0] for t in pilot.tokens)
    assert estimate.prefixes == prefixes * 100
    assert estimate.support >= 1 and estimate.blocks >= 1
    assert estimate.bytes > estimate.bytes_per_trace * 300  # and the process itself
    assert estimate.affordable_traces(estimate.bytes) == pytest.approx(300, abs=1)


def test_a_tiny_time_budget_stops_and_the_report_says_so(capsys, tmp_path):
    output = tmp_path / "learned.safetensors"
    code, out, err = lat("learn", str(PROGRAMS / "parity.lat"), "--time-budget", "1e-6",
                         "--json", "-o", str(output), capsys=capsys)
    assert code == 1
    report = json.loads(out)
    assert report["stopped"] == "time budget"
    assert "fit" in report["skipped"] and "check" in report["skipped"]
    assert report["equivalent"] is None and report["certificate"] is None
    assert "stopped" in err and "no model was learned" in err
    assert not output.exists()  # no fit, no artifact


def test_a_time_budget_that_ends_the_design_keeps_the_fit_and_claims_nothing(parity,
                                                                           monkeypatch):
    """The budget runs out at the first design report: the first fit is kept, and the
    phases not run (minimise, certify, check) make no verdict."""
    ended = {"now": False}

    def progress(phase, done, total):
        if phase == "design":
            ended["now"] = True

    monkeypatch.setattr(Budget, "expired", lambda self: ended["now"])
    result = learn(parity, exact=False, samples=5, max_len=6, domain_samples=200,
                   time_budget=3600, progress=progress)
    report = result.to_json()
    assert report["stopped"] == "time budget" and report["stopped_in"] == "design"
    assert report["skipped"] == ["design", "minimise", "certify", "check"]
    assert report["design_rounds"] == 0 and report["traces_recorded"] == 5
    assert report["traces"] == result.fit.sequences <= 5  # those that opened a count span
    assert result.equivalent is None and result.checked == 0
    assert not result.certificate.identifiable
    assert "not computed" in result.certificate.notes
    certified = result.model.info["certified"]
    assert certified["proven"] is False and "time budget" in certified["reason"]


def test_a_too_small_memory_budget_is_refused_up_front_with_the_estimate(capsys):
    code, out, err = lat("learn", str(PROGRAMS / "parity.lat"), "--no-exact",
                         "--memory-budget", "1K", capsys=capsys)
    assert code == 1 and out == ""
    assert "estimate 1,000 traces" in err and "over the memory budget of 1.0 KB" in err
    assert "--memory-budget" in err


def test_the_refusal_suggests_the_traces_that_would_fit(parity, monkeypatch):
    monkeypatch.setattr(budget_module, "resident_bytes", lambda: 0)
    with pytest.raises(OverBudget) as refused:
        learn(parity, exact=False, samples=1000, memory_budget=1)
    per_trace = refused.value.estimate.bytes_per_trace
    fixed = refused.value.estimate.bytes - 1000 * per_trace
    with pytest.raises(OverBudget, match=r"--max-traces 40 \(or --samples 40\) would fit"):
        learn(parity, exact=False, samples=1000, memory_budget=fixed + 40 * per_trace + 1)


def test_a_memory_budget_caps_the_design_and_says_so(parity, monkeypatch):
    monkeypatch.setattr(budget_module, "resident_bytes", lambda: 0)
    with pytest.raises(OverBudget) as refused:
        learn(parity, exact=False, samples=3, max_len=6, memory_budget=1)
    estimate = refused.value.estimate
    fixed = estimate.bytes - 3 * estimate.bytes_per_trace
    result = learn(parity, exact=False, samples=3, max_len=6, domain_samples=200,
                   memory_budget=fixed + 4 * estimate.bytes_per_trace)
    report = result.to_json()
    assert result.traces <= 4
    assert report["stopped"] == "memory budget" and report["stopped_in"] == "design"
    assert report["max_traces_reached"] is True


def test_budgets_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_:
        lat("learn", str(PROGRAMS / "parity.lat"), "--time-budget", "0", capsys=capsys)
    assert exit_.value.code == 2 and "more than 0 seconds" in capsys.readouterr().err
    with pytest.raises(ValueError, match="memory budget must be positive"):
        Budget(None, 0)


def test_learn_stopped_carries_what_was_reached(parity, monkeypatch):
    monkeypatch.setattr(Budget, "expired", lambda self: True)
    with pytest.raises(LearnStopped) as stopped:
        learn(parity, time_budget=10)
    assert stopped.value.report["stopped"] == "time budget"
    assert stopped.value.report["stopped_in"] == "record"
    assert stopped.value.report["traces"] == 0


# -- phases that allocate between progress reports reserve their estimated peak ---------------


def test_a_budget_that_allows_the_fit_but_not_head_recovery_stops_before_it(
        capsys, tmp_path, monkeypatch):
    """The fit fits; the SVD of its coefficients into heads is estimated over the budget:
    recovery does not start, no model exists, no artifact is written."""
    monkeypatch.setattr(heads_module, "svd_bytes", lambda shapes: 1 << 50)
    output = tmp_path / "learned.safetensors"
    code, out, err = lat("learn", str(PROGRAMS / "parity.lat"), "--memory-budget", "64G",
                         "--json", "-o", str(output), capsys=capsys)
    assert code == 1
    report = json.loads(out)
    assert report["stopped"] == "memory budget" and report["stopped_in"] == "heads"
    assert report["skipped"] == ["fit", "minimise", "certify", "check"]
    assert report["equivalent"] is None and report["certificate"] is None
    assert "SVD" in err and "no model was learned" in err
    assert not output.exists()


def test_a_head_search_over_the_budget_keeps_algorithm_1s_heads_and_says_so(parity,
                                                                           monkeypatch):
    monkeypatch.setattr(minimise_module, "search_bytes", lambda als, r: 1 << 50)
    result = learn(parity, exact=False, samples=20, max_len=6, domain_samples=100,
                   memory_budget=64 << 30)
    report = result.to_json()
    assert report["stopped"] == "memory budget" and report["stopped_in"] == "minimise"
    assert report["skipped"] == ["minimise"]
    assert result.heads == report["heads_before_minimising"] == 2  # Algorithm 1's
    assert any("Algorithm 1's 2 heads kept" in line for line in report["memory_notes"])
    assert result.equivalent is True and result.checked > 0  # certify and check still ran
    assert result.train_max_abs_error < 1e-9


def test_a_head_search_tries_only_the_head_counts_that_fit(monkeypatch):
    """Two random heads: one head's systems fit the budget, two would not, so the search
    stops at one head (and finds nothing) and the budget's notes say why."""
    rng = np.random.default_rng(3)
    d, d_out = 4, 3
    p = head_coefficients(rng.standard_normal((2, d_out, d)), rng.standard_normal((2, d, d)))
    assert minimise_module.minimise_heads(p, d, d_out, max_heads=4)[0].shape[0] == 2
    monkeypatch.setattr(budget_module, "resident_bytes", lambda: 1 << 30)
    monkeypatch.setattr(minimise_module, "search_bytes", lambda als, r: r << 30)
    budget = Budget(None, 5 << 29)
    with budget.in_force():
        assert minimise_module.minimise_heads(p, d, d_out, max_heads=4) is None
    assert budget.notes and "head counts above 1 not tried" in budget.notes[0]


def test_a_check_over_the_budget_is_skipped_and_claims_nothing(parity, monkeypatch):
    monkeypatch.setattr(budget_module, "rollout_bytes", lambda *shape: 1 << 50)
    result = learn(parity, exact=False, samples=20, max_len=6, domain_samples=100,
                   memory_budget=64 << 30)
    report = result.to_json()
    assert report["stopped"] == "memory budget" and report["stopped_in"] == "check"
    assert report["skipped"] == ["check"]
    assert result.equivalent is None and result.checked == 0
    assert result.model.info["certified"]["proven"] is False


def test_a_generous_memory_budget_changes_nothing(parity):
    options = dict(exact=False, samples=20, max_len=6, domain_samples=100)
    free, budgeted = learn(parity, **options), learn(parity, **options,
                                                     memory_budget=64 << 30)
    first, second = free.to_json(), budgeted.to_json()
    for report in (first, second):  # the estimate includes the resident memory at the time
        report.pop("seconds"), report.pop("estimate"), report.pop("memory_budget")
        for part in (report["head_search"] or {}).values():
            if isinstance(part, dict):
                part.pop("seconds")
    assert first == second and second["memory_notes"] == []
    assert np.array_equal(free.model.Q.numpy(), budgeted.model.Q.numpy())


def test_head_bytes_is_what_recovered_heads_occupy():
    rng = np.random.default_rng(0)
    d, d_out = 4, 3
    V, Q = rng.standard_normal((3, d_out, d)), rng.standard_normal((3, d, d))
    V2, Q2 = recover_heads(head_coefficients(V, Q), d, d_out)
    assert heads_module.head_bytes(V2.shape[0], d, d_out) == V2.nbytes + Q2.nbytes


@pytest.mark.parametrize("shape", [(7, 3), (3, 11), (20, 20)])
def test_svd_bytes_covers_the_block_and_its_factors(shape):
    dense = np.random.default_rng(1).standard_normal(shape)
    u, s, vt = np.linalg.svd(dense, full_matrices=False)
    held = dense.nbytes + u.nbytes + s.nbytes + vt.nbytes
    assert held <= heads_module.svd_bytes([shape]) <= 8 * held
    assert heads_module.svd_bytes([shape, shape]) > heads_module.svd_bytes([shape])


def test_projector_bytes_covers_the_complete_qr_where_it_is_built():
    basis = np.random.default_rng(2).standard_normal((12, 8))  # 2·rank ≥ size: null side
    full, r = torch.linalg.qr(torch.from_numpy(basis), mode="complete")
    need = minimise_module.projector_bytes([basis.shape])
    assert full.numpy().nbytes + r.numpy().nbytes <= need <= 4 * full.numpy().nbytes
    assert minimise_module.projector_bytes([(12, 3)]) == 0  # the basis itself is used


def test_search_bytes_covers_the_v_step_normal_matrix_and_grows_with_heads():
    fitted = fit(record_traces(automaton_model(**PARITY), [("0", "1", "1"), ("1", "0")]),
                 minimise=False)
    problem = minimise_module.constraints(fitted.coefficients, fitted.blocks,
                                          fitted.support_block, fitted.support_position)
    als = alternating_module.Alternating(problem)
    for r in (1, 2, 4):
        normal = np.zeros((r * fitted.d) ** 2)  # the V-step's (r·d)² normal matrix
        assert minimise_module.search_bytes(als, r) >= normal.nbytes
    assert minimise_module.search_bytes(als, 4) > minimise_module.search_bytes(als, 2)


def test_rollout_bytes_covers_the_decoders_weights_and_state():
    heads, d, d_out, batch = 3, 6, 2, 8
    Q = torch.ones(heads, d, d, dtype=torch.float32)  # every entry nonzero
    V = torch.ones(heads, d_out, d, dtype=torch.float32)
    state = torch.zeros(batch, d + 1, d_out, dtype=torch.float64)
    mask = Q != 0
    indices = torch.stack(torch.nonzero(mask, as_tuple=True))
    held = sum(t.numel() * t.element_size() for t in (Q, V, state, mask, indices))
    assert held <= budget_module.rollout_bytes(heads, d, d_out, batch, heads * d * d)


def test_a_refit_may_have_only_what_the_budget_leaves_beside_the_fit_held(parity,
                                                                         monkeypatch):
    resident = {"now": 1 << 30}
    monkeypatch.setattr(budget_module, "resident_bytes", lambda: resident["now"])
    estimate = estimate_fit(record_traces(parity, [("0", "1", "1")]).tokens, parity.d_out,
                            total=300)
    per_trace = estimate.bytes_per_trace
    memory = estimate.bytes + 100 * per_trace
    assert estimate.affordable_now(memory, 0) == estimate.affordable_traces(memory) == 400
    resident["now"] += 50 * per_trace  # the last fit and its heads, held during the refit
    assert estimate.affordable_now(memory, 0) == 350
    assert estimate.affordable_now(memory, 10 * per_trace) == 340  # the refit's own heads


def test_without_a_budget_the_machine_s_available_memory_is_the_budget(parity, monkeypatch):
    """No --memory-budget: the memory the machine has is the limit, named as such, so a run
    too big for the machine is refused with its estimate instead of killed mid-way."""
    from lat.learner import budget as budget_module

    result = learn(parity, exact=False, samples=10, max_len=6, domain_samples=50)
    limit = result.to_json()["memory_budget"]
    assert limit["from"] == "available memory" and limit["bytes"] > 0
    monkeypatch.setattr(budget_module, "available_bytes", lambda: 0)  # nothing to spare
    with pytest.raises(OverBudget) as refused:
        learn(parity, exact=False, samples=10, max_len=6, domain_samples=50)
    assert "the memory this machine has available" in str(refused.value)
    given = learn(parity, exact=False, samples=10, max_len=6, domain_samples=50,
                  memory_budget=64 << 30)  # a given budget is the user's, whatever the machine
    assert given.to_json()["memory_budget"] == {"bytes": 64 << 30, "from": "given"}
