"""Big one-hot tables are stored as indices + values, and vouched for by the same digest."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lat.bench import automaton_source
from lat.compiler import compile_source
from lat.runtime.errors import ArtifactError
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel


@pytest.fixture(scope="module")
def big():
    return compile_source(automaton_source(300, 4)).model  # Q is 1201², 5.8 MB dense


def test_sparse_file_loads_the_same_model(big, tmp_path):
    path = tmp_path / "big.safetensors"
    digest = big.save(path)
    assert path.stat().st_size < 200_000  # dense: 5.8 MB of Q alone
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())  # noqa: SIM118 (a safetensors handle, not a dict)
        assert "Q.indices" in names and "Q" not in names
    loaded = CompiledModel.load(path)
    assert torch.equal(loaded.V, big.V) and torch.equal(loaded.Q, big.Q)
    assert loaded.sha256() == digest == big.sha256()
    word = tuple(big.interface.input_alphabet) * 3
    assert rollout(loaded, [word])[0].decoded == rollout(big, [word])[0].decoded


def _rewrite(path, edit) -> None:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["Q.values"].__setitem__(0, 2.0), "checksum mismatch"),
    (lambda t: t["Q.indices"].__setitem__(-1, 1 << 30), "malformed"),
    (lambda t: t["Q.indices"].__setitem__(1, 0), "malformed"),
    (lambda t: t.__setitem__("Q.shape", torch.tensor([1 << 40, 1 << 20])), "malformed"),
    (lambda t: t.__setitem__("Q", torch.zeros(1)), "both dense and sparse"),
    (lambda t: t.pop("Q.values"), "expected tensors V and Q"),
], ids=["value", "out-of-range", "unordered", "huge-shape", "dense-and-sparse", "part-missing"])
def test_edited_sparse_parts_are_refused(big, tmp_path, edit, message):
    path = tmp_path / "big.safetensors"
    big.save(path)
    _rewrite(path, edit)
    with pytest.raises(ArtifactError, match=message) as caught:
        CompiledModel.load(path)
    assert "\n" not in str(caught.value)


def test_small_tensors_stay_dense(tmp_path):
    model = compile_source(automaton_source(3, 2)).model
    path = tmp_path / "small.safetensors"
    model.save(path)
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == ["Q", "V"]
        assert json.loads(handle.metadata()["lat"])["sha256"] == model.sha256()
