"""Artifacts: save → load is bit-identical; every kind of damage is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from lat.runtime.errors import ArtifactError
from lat.runtime.model import SCHEMA_VERSION, CompiledModel
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
    save_file({"V": model.V}, str(path), metadata={"lat": json.dumps({"schema": SCHEMA_VERSION})})
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


def _edit_header(path, edit) -> None:
    """Rewrite the file's lat metadata through `edit`, tensors and digest untouched."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["lat"])
    edit(header)
    save_file(load_file(str(path)), str(path), metadata={"lat": json.dumps(header)})


def _swap_labels(header) -> None:
    fields = header["interface"]["output_fields"]
    fields[-1]["values"] = list(reversed(fields[-1]["values"]))


@pytest.mark.parametrize("edit", [
    _swap_labels,
    lambda h: h["interface"].__setitem__("program", "renamed"),
    lambda h: h["interface"].__setitem__("input_alphabet", ["x", "y"]),
    lambda h: h.__setitem__("scale", 2.0),
    lambda h: h.__setitem__("normalise", True),
    lambda h: h["info"].__setitem__("origin", "forged"),
    lambda h: h["info"].__setitem__("extra", 1),
    lambda h: h.pop("info"),
    lambda h: h.pop("sha256"),
], ids=["labels", "program", "alphabet", "scale", "normalise", "info-value", "info-key",
        "no-info", "no-digest"])
def test_any_metadata_edit_is_refused(tmp_path, edit):
    path = tmp_path / "m.safetensors"
    mod3_counter().with_info(origin="compiled").save(path)
    _edit_header(path, lambda header: None)  # a rewrite alone changes nothing
    CompiledModel.load(path)
    _edit_header(path, edit)
    with pytest.raises(ArtifactError, match="checksum mismatch") as caught:
        CompiledModel.load(path)
    assert "\n" not in str(caught.value)


def test_the_digest_covers_tensors_and_metadata():
    model = mod3_counter()
    assert model.sha256() != model.with_info(note="x").sha256()
    assert model.sha256() == model.with_info().sha256()


def test_schema_1_files_are_refused_with_a_reason(tmp_path):
    path = tmp_path / "m.safetensors"
    mod3_counter().save(path)
    _edit_header(path, lambda h: h.__setitem__("schema", "1"))
    with pytest.raises(ArtifactError, match="schema '1' is not '2'.*recompile"):
        CompiledModel.load(path)
