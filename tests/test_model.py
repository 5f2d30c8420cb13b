"""Artifacts: save → load is bit-identical; every kind of damage is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from lat.runtime.errors import ArtifactError
from lat.runtime.model import CompiledModel
from tests.runtime_fixtures import mod3_counter


def test_save_load_is_bit_identical(tmp_path):
    model = mod3_counter().with_info(decode_margin=1.0, program="mod3")
    path = tmp_path / "m.safetensors"
    digest = model.save(path)
    loaded = CompiledModel.load(path)
    assert torch.equal(loaded.V, model.V) and torch.equal(loaded.Q, model.Q)
    assert loaded.V.dtype == model.V.dtype
    assert loaded.interface == model.interface
    assert loaded.info == model.info and loaded.sha256() == digest
    model.save(tmp_path / "again.safetensors")  # the same model gives the same bytes
    assert path.read_bytes() == (tmp_path / "again.safetensors").read_bytes()


@given(dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 1000))
def test_random_weights_round_trip(tmp_path_factory, dtype, seed):
    base = mod3_counter()
    generator = torch.Generator().manual_seed(seed)
    model = CompiledModel(torch.randn(base.V.shape, generator=generator, dtype=dtype),
                          torch.randn(base.Q.shape, generator=generator, dtype=dtype),
                          base.interface)
    path = tmp_path_factory.mktemp("rt") / "m.safetensors"
    model.save(path)
    loaded = CompiledModel.load(path)
    assert torch.equal(loaded.V, model.V) and torch.equal(loaded.Q, model.Q)


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="no such artifact"):
        CompiledModel.load(tmp_path / "absent.safetensors")


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ArtifactError, match="not a readable"):
        CompiledModel.load(path)


def test_flipped_weight_byte_fails_the_checksum(tmp_path):
    path = tmp_path / "m.safetensors"
    mod3_counter().save(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # inside the tensor data, at the end of the file
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        CompiledModel.load(path)


def test_wrong_schema_and_missing_tensors(tmp_path):
    model = mod3_counter()
    path = tmp_path / "old.safetensors"
    save_file({"V": model.V, "Q": model.Q}, str(path), metadata={"lat": '{"schema": "0"}'})
    with pytest.raises(ArtifactError, match="schema"):
        CompiledModel.load(path)
    save_file({"V": model.V, "Q": model.Q}, str(path), metadata={"other": "tool"})
    with pytest.raises(ArtifactError, match="not a lat artifact"):
        CompiledModel.load(path)
    save_file({"V": model.V}, str(path), metadata={"lat": '{"schema": "1"}'})
    with pytest.raises(ArtifactError, match="expected tensors V and Q"):
        CompiledModel.load(path)


def test_shapes_must_match_the_interface():
    model = mod3_counter()
    with pytest.raises(ArtifactError, match="interface says"):
        CompiledModel(model.V[:, :, :-1], model.Q[:, :-1, :-1], model.interface)


def test_info_is_json(tmp_path):
    path = tmp_path / "m.safetensors"
    mod3_counter().with_info(report={"a": 1}).save(path)
    assert CompiledModel.load(path).info == json.loads(json.dumps({"report": {"a": 1}}))
