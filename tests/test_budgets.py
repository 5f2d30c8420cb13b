"""`lat learn`'s time and memory budgets, and the estimate they are checked against."""

from __future__ import annotations

import json

import pytest

from lat.learner import budget as budget_module
from lat.learner import learn
from lat.learner.budget import Budget, OverBudget, estimate_fit
from lat.learner.learn import LearnStopped
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
    assert report["design_rounds"] == 0 and report["traces"] == 5
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
