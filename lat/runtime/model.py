"""The artifact: MHLA weights plus the Interface that says how to run them.

On disk an artifact is one safetensors file: tensors ``V`` (H, d_out, d) and ``Q``
(H, d, d), and in the file's metadata one key ``lat`` holding JSON with the schema version,
the Interface, the scale/normalise flags, free-form info (compile report, provenance) and
``sha256``: one digest over the tensors *and* the canonical JSON of everything else in that
header (`artifact_digest`), so an edit to a label, a name, the scale or the info is refused
exactly like a flipped weight byte. Loading checks all of it; a file that fails any check is
refused with one line (never pickle, never a partial model).

Schema history: "1" (digest over the tensors only) is refused with a request to recompile —
loading it would trust metadata nothing vouches for. "2": every tensor's digest is over its
dense bytes (also when the file stores it as indices + values). "3" (written whenever a
tensor is stored sparse): a sparse-stored tensor's digest is over its stored parts (flat
positions and values), so a table of 50,000 entries is checked, loaded and kept as a
sparse COO tensor without ever building its 10 GB dense form; weights whose dense form is
at most `DENSE_LOAD_BYTES` (V and Q together) are densified on load, as before.

The digest detects corruption and edits; it is not a signature (whoever rewrites a file
can recompute it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from lat.runtime.errors import ArtifactError
from lat.runtime.interface import Interface
from lat.runtime.storage import (
    SPARSE_PARTS,
    dense_from_parts,
    read_safetensors,
    sparse_digest_bytes,
    sparse_parts,
    stored_sparse,
    tensor_from_parts,
    write_safetensors,
)

SCHEMA_VERSION = "2"  # all digests over dense bytes
SPARSE_SCHEMA = "3"  # sparse-stored tensors digested as stored (see the module docstring)
DENSE_LOAD_BYTES = 64 << 20  # sparse-stored weights up to this dense size load dense


@dataclass(frozen=True)
class CompiledModel:
    """A runnable MHLA artifact, compiled or learned alike."""

    V: torch.Tensor  # (H, d_out, d)
    Q: torch.Tensor  # (H, d, d)
    interface: Interface
    scale: float = 1.0
    normalise: bool = False
    info: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.V.ndim != 3 or self.Q.ndim != 3:
            raise ArtifactError("V must be (H, d_out, d) and Q (H, d, d)")
        H, d_out, d = self.V.shape
        if tuple(self.Q.shape) != (H, d, d):
            raise ArtifactError(f"Q has shape {tuple(self.Q.shape)}, expected {(H, d, d)}")
        if d != self.interface.d or d_out != self.interface.d_out:
            raise ArtifactError(
                f"weights are d={d}, d_out={d_out} but the interface says "
                f"d={self.interface.d}, d_out={self.interface.d_out}"
            )

    @property
    def heads(self) -> int:
        return int(self.V.shape[0])

    @property
    def d(self) -> int:
        return int(self.V.shape[2])

    @property
    def d_out(self) -> int:
        return int(self.V.shape[1])

    @property
    def parameters(self) -> int:
        return int(self.V.numel() + self.Q.numel())

    @property
    def sparse(self) -> bool:
        """Whether V or Q is held as a sparse COO tensor (big one-hot tables)."""
        return self.V.layout == torch.sparse_coo or self.Q.layout == torch.sparse_coo

    def dense(self) -> CompiledModel:
        """The same model with dense V and Q (itself when already dense): for consumers
        that need dense matrices; a big table's dense form may not fit in memory."""
        if not self.sparse:
            return self
        return replace(self, V=self.V.to_dense(), Q=self.Q.to_dense())

    def _schema(self) -> str:
        return SPARSE_SCHEMA if stored_sparse(self.V) or stored_sparse(self.Q) else SCHEMA_VERSION

    def _parts(self) -> dict[str, torch.Tensor]:
        """The tensors as `save` writes them (big one-hot tables as indices + values)."""
        return {**sparse_parts("V", self.V), **sparse_parts("Q", self.Q)}

    def with_info(self, **more: object) -> CompiledModel:
        return replace(self, info={**self.info, **more})

    def sha256(self) -> str:
        """The artifact's digest: tensors and canonical metadata (what `save` stores)."""
        return parts_digest(self._parts(), self.header())

    def header(self) -> dict[str, object]:
        """The canonical metadata: what a saved file holds besides the tensors and digest."""
        return canonical({
            "schema": self._schema(),
            "interface": json.loads(self.interface.to_json()),
            "scale": float(self.scale),
            "normalise": bool(self.normalise),
            "info": dict(self.info),
        })

    def save(self, path: str | os.PathLike) -> str:
        """Write the artifact atomically (temp file + rename); return its sha256."""
        parts = self._parts()
        header = self.header()
        digest = parts_digest(parts, header)
        # One metadata key holding sorted JSON: the file's bytes depend only on the model
        # (safetensors does not fix the order of several metadata keys).
        metadata = {"lat": json.dumps({**header, "sha256": digest}, sort_keys=True)}
        # big one-hot tables go to disk as indices + values; the digest covers them as
        # stored (schema 3), so they are checked without densifying
        write_safetensors(path, parts, metadata)
        return digest

    @staticmethod
    def load(path: str | os.PathLike) -> CompiledModel:
        """Read and check an artifact; any defect raises ArtifactError with one line."""
        path = Path(path)
        tensors, metadata = read_safetensors(path, "artifact file")
        try:
            header = json.loads(metadata["lat"])
            schema = header["schema"]
        except (KeyError, TypeError, ValueError, RecursionError):
            raise ArtifactError(f"{path}: not a lat artifact (no lat metadata)") from None
        if schema not in (SCHEMA_VERSION, SPARSE_SCHEMA):
            raise ArtifactError(
                f"{path}: artifact schema {schema!r} is not {SCHEMA_VERSION!r} or "
                f"{SPARSE_SCHEMA!r} (recompile it with this version of lat)"
            )
        names = {"V", "Q"} | {f"{t}.{part}" for t in ("V", "Q") for part in SPARSE_PARTS}
        if not set(tensors) <= names:
            raise ArtifactError(f"{path}: expected tensors V and Q, found {sorted(tensors)}")
        if not isinstance(header, dict):
            raise ArtifactError(f"{path}: not a lat artifact (malformed lat metadata)")
        found = sorted(tensors)
        stored_parts = tensors
        if schema == SPARSE_SCHEMA:  # big weights stay sparse, both V and Q
            limit = -1 if _dense_bytes(stored_parts) > DENSE_LOAD_BYTES else DENSE_LOAD_BYTES
            tensors = {name: tensor_from_parts(stored_parts, name, path, limit)
                       for name in ("V", "Q")}
        else:
            tensors = {name: dense_from_parts(stored_parts, name, path) for name in ("V", "Q")}
        if tensors["V"] is None or tensors["Q"] is None:
            raise ArtifactError(f"{path}: expected tensors V and Q, found {found}")
        stored = header.pop("sha256", None)
        expected = (parts_digest(stored_parts, header) if schema == SPARSE_SCHEMA
                    else artifact_digest(tensors["V"], tensors["Q"], header))
        if stored != expected:
            raise ArtifactError(f"{path}: checksum mismatch: the file is corrupt or was edited "
                                "(the digest covers the tensors and the metadata)")
        try:
            interface = Interface.from_json(json.dumps(header.get("interface")))
            return CompiledModel(
                V=tensors["V"],
                Q=tensors["Q"],
                interface=interface,
                scale=float(header.get("scale", 1.0)),
                normalise=bool(header.get("normalise", False)),
                info=dict(header.get("info", {})),
            )
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ArtifactError(f"{path}: malformed metadata ({exc})") from None


def _dense_bytes(parts: Mapping[str, torch.Tensor]) -> int:
    """The dense size of V and Q together as a file declares them (checked later)."""
    total = 0
    for name in ("V", "Q"):
        if name in parts:
            total += parts[name].numel() * parts[name].element_size()
        elif f"{name}.shape" in parts and f"{name}.values" in parts:
            count = 1
            for dim in parts[f"{name}.shape"].tolist():
                count *= max(int(dim), 0)
            total += count * parts[f"{name}.values"].element_size()
    return total


def canonical(value: object) -> object:
    """`value` as the JSON it is stored as (tuples → lists, keys → strings, other → str)."""
    return json.loads(json.dumps(value, default=str))


def artifact_digest(V: torch.Tensor, Q: torch.Tensor, header: Mapping[str, object]) -> str:
    """sha256 over the tensors (`tensor_digest`) and the sorted JSON of the metadata."""
    text = json.dumps(canonical(header), sort_keys=True)
    return hashlib.sha256(f"{tensor_digest(V, Q)}\n{text}".encode()).hexdigest()


def parts_digest(parts: Mapping[str, torch.Tensor], header: Mapping[str, object]) -> str:
    """The digest of tensors as a file stores them: dense ones over their bytes (as
    `tensor_digest`), sparse-stored ones over their parts (`storage.sparse_digest_bytes`)."""
    digest = hashlib.sha256()
    for name in ("V", "Q"):
        if name in parts:
            _update_dense(digest, name, parts[name])
        else:
            for chunk in sparse_digest_bytes(dict(parts), name):
                digest.update(chunk)
    text = json.dumps(canonical(header), sort_keys=True)
    return hashlib.sha256(f"{digest.hexdigest()}\n{text}".encode()).hexdigest()


def _update_dense(digest: hashlib._Hash, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().contiguous().cpu()
    digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def tensor_digest(V: torch.Tensor, Q: torch.Tensor) -> str:
    """sha256 over dtype, shape and raw bytes of V then Q."""
    digest = hashlib.sha256()
    for name, tensor in (("V", V), ("Q", Q)):
        _update_dense(digest, name, tensor)
    return digest.hexdigest()
