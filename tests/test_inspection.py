"""lat.inspection: what `lat compile/inspect/trace/learn` report, called from Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lat.api import compile_file, load_model, shipped_program
from lat.compiler import compile_source
from lat.inspection import (
    TraceRecording,
    artifact_summary,
    certificate_summary,
    context_sizes,
    learn_summary,
    model_summary,
    plot_weights,
    record_trace_file,
)
from lat.learner import learn
from lat.learner.traces import load_traces
from lat.runtime.errors import ResourceError
from lat.runtime.model import CompiledModel

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


@pytest.fixture(scope="module")
def parity():
    return compile_source(shipped_program("parity.lat"), "parity.lat").model


@pytest.fixture(scope="module")
def learned(parity):
    return learn(parity, max_len=8, seed=0)


def test_a_compiled_model_summary_names_its_sizes_and_digest(parity):
    summary = model_summary(parity)
    assert summary["program"] == "parity" and summary["kind"] == "automaton"
    assert (summary["heads"], summary["d"], summary["d_out"]) == (parity.heads, parity.d,
                                                                  parity.d_out)
    assert summary["parameters"] == parity.parameters and summary["sha256"] == parity.sha256()
    assert summary["origin"] == "compiled" and certificate_summary(parity) == {}
    assert "certificate" not in summary  # a compiled model stands on the compiler, not on one


def test_a_learned_model_summary_says_what_its_certificate_covers(learned):
    summary = model_summary(learned.model)
    assert summary["origin"] == "learned" and summary["certified"] is True
    assert summary["certificate"].startswith("exact: ")
    assert summary["equivalence"] == learned.equivalence.statement
    assert "not certified because" not in summary


def test_the_artifact_summary_carries_the_interface_as_saved(tmp_path, parity):
    path = tmp_path / "parity.safetensors"
    parity.save(path)
    reloaded = load_model(path)
    summary = artifact_summary(reloaded)
    assert summary["interface"] == json.loads(reloaded.interface.to_json())
    assert summary["sha256"] == parity.sha256()


def test_context_sizes_count_the_prompt_and_the_tokens_per_step():
    bound = compile_file(PROGRAMS / "parity.lat", placement="context").model
    sizes = context_sizes(bound)
    prompt = len(bound.interface.prompt)
    assert sizes["prompt_tokens"] == prompt and sizes["tokens_per_step"] >= 1
    assert sizes["tokens_for_t_steps"] == f"c(t) = {prompt} + {sizes['tokens_per_step']}·t"


def test_the_weight_plot_is_a_png(tmp_path, parity):
    path = plot_weights(parity, tmp_path / "weights.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sparse_weights_are_plotted_as_their_nonzeros(tmp_path, parity):
    """A big one-hot table is held sparse; its plot draws the nonzeros, never densifying."""
    sparse = CompiledModel(parity.V.to_sparse(), parity.Q.to_sparse(), parity.interface)
    assert sparse.sparse
    path = plot_weights(sparse, tmp_path / "sparse.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_trace_file_holds_what_the_recording_says(tmp_path, parity):
    path = tmp_path / "parity.traces"
    recording = record_trace_file(parity, path, samples=12, max_len=5, seed=3)
    traces = load_traces(path)
    assert recording == TraceRecording(rollouts=12, pairs=sum(len(t) for t in traces.tokens),
                                       path=str(path))
    assert len(traces) == 12 and max(len(w) for w in traces.inputs) <= 5
    assert recording.to_json() == {"traces": 12, "samples": recording.pairs, "file": str(path)}


def test_a_trace_recording_over_max_steps_is_refused_before_running(tmp_path, parity):
    path = tmp_path / "never.traces"
    with pytest.raises(ResourceError, match="max-steps"):
        record_trace_file(parity, path, samples=3, max_len=50, max_steps=10)
    assert not path.exists()


def test_the_learn_rows_state_the_verdict_and_its_evidence(learned):
    report = learned.to_json()
    rows = dict(learn_summary(report))
    assert rows["heads"].split()[0] == str(report["heads"])
    assert rows["scope"] == f"{report['certificate']['scope']}: {report['certificate']['domain']}"
    assert rows["equivalent"].startswith(f"{report['equivalent']} (")
    assert rows["evidence"] == report["equivalence"]["statement"]
    assert all(isinstance(value, str) for value in rows.values())
