"""Checked safetensors files, shared by artifacts and traces: atomic writes, and reads whose
every failure is one ArtifactError line (never pickle, never a half-written file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors import numpy as safetensors_numpy
from safetensors import torch as safetensors_torch

from lat.runtime.errors import ArtifactError

_FORMATS = {"pt": safetensors_torch, "np": safetensors_numpy}


def write_safetensors(
    path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str],
    framework: str = "pt",
) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see a partial file."""
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    _FORMATS[framework].save_file(tensors, str(temporary), metadata=metadata)
    os.replace(temporary, target)


def read_safetensors(
    path: str | os.PathLike, what: str, framework: str = "pt"
) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors and string metadata of `path`; `what` names the file in errors."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such {what}")
    try:
        with safe_open(str(path), framework=framework) as handle:
            metadata = handle.metadata() or {}
        tensors = _FORMATS[framework].load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{path}: not a readable safetensors {what} ({message})") from None
    return tensors, metadata
