"""Traces: sampling, recording, and the safetensors file (round trip, corruption)."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lat.compiler.lower.automaton import lower_automaton
from lat.learner.traces import Traces, load_traces, record_traces, sample_words, save_traces
from lat.runtime.errors import ArtifactError
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel


def parity_model() -> CompiledModel:
    spec = SimpleNamespace(
        name="parity", alphabet=("0", "1"), states=("even", "odd"), start="even",
        accept=frozenset({"even"}),
        transition_table={("even", "0"): "even", ("even", "1"): "odd",
                          ("odd", "0"): "odd", ("odd", "1"): "even"},
    )
    lowered = lower_automaton(spec)
    return CompiledModel(torch.from_numpy(lowered.V), torch.from_numpy(lowered.Q),
                         lowered.interface)


@pytest.fixture(scope="module")
def traces() -> Traces:
    model = parity_model()
    return record_traces(model, sample_words(model.interface, 30, 9, np.random.default_rng(0)))


def test_sample_words_lengths_symbols_and_seed():
    interface = parity_model().interface
    words = sample_words(interface, 500, 6, np.random.default_rng(1))
    assert len(words) == 500
    assert {len(w) for w in words} == set(range(7))  # uniform on 0..max_len
    assert set().union(*words) == {"0", "1"}
    assert words == sample_words(interface, 500, 6, np.random.default_rng(1))
    assert sample_words(interface, 3, 0, np.random.default_rng(2)) == [(), (), ()]


def test_record_traces_keeps_every_prefix_output(traces):
    model = parity_model()
    runs = rollout(model, traces.inputs, record=True, dtype="fp64")
    assert len(traces) == 30
    assert traces.samples == sum(len(w) + 1 for w in traces.inputs)  # bos + one per symbol
    for run, tokens, outputs, steps in zip(runs, traces.tokens, traces.outputs, traces.steps,
                                           strict=True):
        assert tokens.dtype == outputs.dtype == np.float64
        assert tokens.shape == (len(run.input) + 1, model.d)
        assert outputs.shape == (len(run.input) + 1, model.d_out)
        np.testing.assert_array_equal(tokens, run.tokens)
        np.testing.assert_array_equal(outputs, run.outputs)
        assert steps == run.steps
    assert traces.source == model.sha256()


def test_save_load_round_trip_is_bit_identical(traces, tmp_path):
    path = tmp_path / "parity.traces.safetensors"
    digest = save_traces(traces, path)
    loaded = load_traces(path)
    assert digest == traces.sha256() == loaded.sha256()
    assert loaded.inputs == traces.inputs
    assert loaded.interface.to_json() == traces.interface.to_json()
    assert loaded.steps == traces.steps and loaded.stopped_by == traces.stopped_by
    assert loaded.source == traces.source
    for a, b in zip(traces.tokens + traces.outputs, loaded.tokens + loaded.outputs,
                    strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    # Saving what was loaded writes the same tensors again (the header's key order may vary).
    assert save_traces(loaded, tmp_path / "again.safetensors") == digest


def test_empty_traces_round_trip(tmp_path):
    interface = parity_model().interface
    empty = Traces(tokens=[], outputs=[], inputs=[], interface=interface)
    save_traces(empty, tmp_path / "empty.safetensors")
    loaded = load_traces(tmp_path / "empty.safetensors")
    assert len(loaded) == 0 and loaded.samples == 0 and loaded.steps is None


def _header(path):
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    return data, size, json.loads(data[8 : 8 + size])


def _rewrite_metadata(path, **changes):
    data, size, header = _header(path)
    header["__metadata__"].update(changes)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])


def test_corrupt_files_raise_one_line_artifact_errors(traces, tmp_path):
    path = tmp_path / "t.safetensors"
    save_traces(traces, path)
    good = path.read_bytes()
    cases = {}

    cases["missing"] = tmp_path / "nope.safetensors"
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    cases["truncated"] = truncated
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    cases["garbage"] = garbage
    flipped = tmp_path / "flipped.safetensors"
    data = bytearray(good)
    data[-3] ^= 0xFF  # a byte of tensor data
    flipped.write_bytes(bytes(data))
    cases["flipped"] = flipped
    for name, change in {
        "schema": {"lat_traces_schema": "99"},
        "interface": {"interface": "{}"},
        "inputs": {"inputs": "[[1, 2"},
        "count": {"inputs": json.dumps([["0"]])},
    }.items():
        target = tmp_path / f"{name}.safetensors"
        target.write_bytes(good)
        _rewrite_metadata(target, **change)
        cases[name] = target
    model_file = tmp_path / "model.safetensors"
    parity_model().save(model_file)  # a model artifact is not a traces file
    cases["model"] = model_file

    for name, target in cases.items():
        with pytest.raises(ArtifactError) as info:
            load_traces(target)
        message = str(info.value)
        assert "\n" not in message and message, name
