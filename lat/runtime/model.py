"""The artifact: MHLA weights plus the Interface that says how to run them.

On disk an artifact is one safetensors file: tensors ``V`` (H, d_out, d) and ``Q``
(H, d, d), and in the file's metadata one key ``lat`` holding JSON with the schema version,
the Interface, the scale/normalise flags, free-form info (compile report, provenance) and
the sha256 of the tensors. Loading checks all of it; a file that fails any check is refused
with one line (never pickle, never a partial model).
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
from lat.runtime.storage import read_safetensors, write_safetensors

SCHEMA_VERSION = "1"


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

    def with_info(self, **more: object) -> CompiledModel:
        return replace(self, info={**self.info, **more})

    def sha256(self) -> str:
        return tensor_digest(self.V, self.Q)

    def save(self, path: str | os.PathLike) -> str:
        """Write the artifact atomically (temp file + rename); return its tensor sha256."""
        V, Q = self.V.contiguous(), self.Q.contiguous()
        digest = tensor_digest(V, Q)
        # One metadata key holding sorted JSON: the file's bytes depend only on the model
        # (safetensors does not fix the order of several metadata keys).
        header = {
            "schema": SCHEMA_VERSION,
            "interface": json.loads(self.interface.to_json()),
            "scale": float(self.scale),
            "normalise": bool(self.normalise),
            "info": dict(self.info),
            "sha256": digest,
        }
        metadata = {"lat": json.dumps(header, sort_keys=True, default=str)}
        write_safetensors(path, {"V": V, "Q": Q}, metadata)
        return digest

    @staticmethod
    def load(path: str | os.PathLike) -> CompiledModel:
        """Read and check an artifact; any defect raises ArtifactError with one line."""
        path = Path(path)
        tensors, metadata = read_safetensors(path, "artifact file")
        try:
            header = json.loads(metadata["lat"])
            schema = header["schema"]
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{path}: not a lat artifact (no lat metadata)") from None
        if schema != SCHEMA_VERSION:
            raise ArtifactError(
                f"{path}: artifact schema {schema!r} is not {SCHEMA_VERSION!r} "
                "(recompile it with this version of lat)"
            )
        if set(tensors) != {"V", "Q"}:
            raise ArtifactError(f"{path}: expected tensors V and Q, found {sorted(tensors)}")
        digest = tensor_digest(tensors["V"], tensors["Q"])
        if header.get("sha256") != digest:
            raise ArtifactError(f"{path}: tensor checksum mismatch: the file is corrupt")
        interface = Interface.from_json(json.dumps(header.get("interface")))
        try:
            scale = float(header.get("scale", 1.0))
            info = dict(header.get("info", {}))
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: malformed metadata ({exc})") from None
        return CompiledModel(
            V=tensors["V"],
            Q=tensors["Q"],
            interface=interface,
            scale=scale,
            normalise=bool(header.get("normalise", False)),
            info=info,
        )


def tensor_digest(V: torch.Tensor, Q: torch.Tensor) -> str:
    """sha256 over dtype, shape and raw bytes of V then Q."""
    digest = hashlib.sha256()
    for name, tensor in (("V", V), ("Q", Q)):
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
