"""Big one-hot tables are stored as indices + values, and vouched for by the digest; big
sparse weights stay sparse from compile to save to load (schema 3)."""

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
from lat.runtime.model import (
    SCHEMA_VERSION,
    SPARSE_SCHEMA,
    CompiledModel,
    artifact_digest,
)
from lat.runtime.storage import sparse_parts


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


# -- sparse weights in memory: schema 3, digested as stored, never densified --------------


@pytest.fixture(scope="module")
def huge():
    """A 2,000-state automaton: dense V and Q would be 96 MB; lowered sparse."""
    return compile_source(automaton_source(2000, 2)).model


def test_big_tables_are_sparse_from_compile_to_load(huge, tmp_path):
    assert huge.sparse
    path = tmp_path / "huge.safetensors"
    digest = huge.save(path)
    assert path.stat().st_size < 5_000_000
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["lat"])
    assert header["schema"] == SPARSE_SCHEMA and header["sha256"] == digest
    loaded = CompiledModel.load(path)
    assert loaded.sparse and loaded.V.layout == torch.sparse_coo  # kept sparse
    assert loaded.sha256() == digest == huge.sha256()
    assert torch.equal(loaded.V.to_dense(), huge.V.to_dense())
    assert torch.equal(loaded.Q.to_dense(), huge.Q.to_dense())
    words = [tuple(huge.interface.input_alphabet) * 4, ()]
    assert [r.decoded for r in rollout(loaded, words)] == [r.decoded for r in
                                                           rollout(huge, words)]


def test_a_sparse_model_digests_as_its_dense_twin_stores(big, tmp_path):
    """The same weights held sparse or dense save to the same file and digest."""
    twin = CompiledModel(big.V.to_sparse(), big.Q.to_sparse(), big.interface, info=big.info)
    assert twin.sha256() == big.sha256()
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    big.save(first)
    twin.save(second)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["V.values"].__setitem__(0, 0.5), "checksum mismatch"),
    (lambda t: t["V.indices"].__setitem__(0, t["V.indices"][1]), "malformed"),
], ids=["value", "duplicate-position"])
def test_edited_sparse_models_are_refused(huge, tmp_path, edit, message):
    path = tmp_path / "huge.safetensors"
    huge.save(path)
    _rewrite(path, edit)
    with pytest.raises(ArtifactError, match=message):
        CompiledModel.load(path)


def test_schema_2_files_with_sparse_parts_still_load(big, tmp_path):
    """Files written before schema 3 (sparse parts, digest over the dense bytes)."""
    path = tmp_path / "old.safetensors"
    header = {**big.header(), "schema": SCHEMA_VERSION}
    digest = artifact_digest(big.V, big.Q, header)
    metadata = {"lat": json.dumps({**header, "sha256": digest}, sort_keys=True)}
    save_file({**sparse_parts("V", big.V), **sparse_parts("Q", big.Q)}, str(path),
              metadata=metadata)
    loaded = CompiledModel.load(path)
    assert torch.equal(loaded.Q, big.Q) and not loaded.sparse
