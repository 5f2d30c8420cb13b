"""Checked safetensors files, shared by artifacts and traces: atomic writes, and reads whose
every failure is one ArtifactError line (never pickle, never a half-written file).

Writes go to a uniquely named temporary file beside the target, created with the process
umask like any other file (not the 0600 of `mkstemp`), then renamed over the target; on
any failure the temporary file is removed and one ArtifactError line is raised.
"""

from __future__ import annotations

import importlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from lat.runtime.errors import ArtifactError

_FORMATS = {"pt": "safetensors.torch", "np": "safetensors.numpy"}  # imported when used


def _format(framework: str):
    return importlib.import_module(_FORMATS[framework])


def is_artifact(path: str | os.PathLike) -> bool:
    """Whether `path` holds a safetensors file (an artifact or traces), judged by content:
    an 8-byte little-endian header length that fits the file, then a JSON object. A `.lat`
    program never looks like that (its first 8 bytes read as a length beyond any file)."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(9)
            handle.seek(0, 2)
            size = handle.tell()
    except OSError:
        return False
    if len(start) < 9:
        return False
    length = int.from_bytes(start[:8], "little")
    return 2 <= length <= size - 8 and start[8:9] == b"{"


def write_safetensors(
    path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str],
    framework: str = "pt",
) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see a partial file."""
    atomic_write(path, lambda: _format(framework).save(tensors, metadata=metadata))


def atomic_write(path: str | os.PathLike, content: Any) -> None:
    """Write `content` (bytes, or a function returning them) to a temporary file beside
    `path` with the process umask, then rename it into place; any failure, Ctrl-C
    included, removes the temporary file and raises one ArtifactError line."""
    target = Path(path)
    check_output_path(target)
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
    except OSError as exc:
        raise ArtifactError(f"{target}: cannot write ({exc.strerror or exc})") from None
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o666 & ~_umask())
            stream.write(content() if callable(content) else content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException as exc:  # KeyboardInterrupt included: never leave the temporary
        temporary.unlink(missing_ok=True)
        if isinstance(exc, (OSError, SafetensorError)):
            raise ArtifactError(f"{target}: cannot write ({_reason(exc)})") from None
        raise


def check_output_path(path: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = (),
                      flag: str = "-o") -> Path:
    """Refuse, in one ArtifactError line, an output path that cannot or must not be written:
    one of the `inputs` (compared resolved), a directory, something other than a regular
    file, or a path whose folder is missing or not writable. Cheap: call it before any work."""
    target = Path(path)
    resolved = target.resolve()
    for source in inputs:
        if source is None:
            continue
        source_path = Path(source)
        same = source_path.resolve() == resolved
        if not same and source_path.exists() and target.exists():
            try:
                same = os.path.samefile(source_path, target)
            except OSError:
                same = False
        if same:
            raise ArtifactError(f"{flag} {target} is the input file {source}: "
                                "refusing to overwrite it (choose another output path)")
    if target.is_dir():
        raise ArtifactError(f"{flag} {target} is a directory: give a file path inside it")
    if target.exists() and not target.is_file():
        raise ArtifactError(f"{flag} {target} exists and is not a regular file")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        raise ArtifactError(f"{flag} {target}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise ArtifactError(f"{flag} {target}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"{flag} {target}: the folder {parent} is not writable")
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


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
        tensors = _format(framework).load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{path}: not a readable safetensors {what} ({message})") from None
    return tensors, metadata


# --------------------------------------------------------------------------------------
# Sparse tensors on disk: one-hot tables as indices + values
# --------------------------------------------------------------------------------------

SPARSE_MIN_BYTES = 1 << 16  # smaller tensors stay dense (nothing worth saving)
MAX_DENSE_BYTES = 1 << 36  # a sparse tensor declaring more than this is refused
SPARSE_PARTS = ("indices", "values", "shape")


def _dense_bytes(tensor: Any) -> int:
    return tensor.numel() * tensor.element_size()


def _flat_nonzeros(tensor: Any) -> tuple[Any, Any]:
    """(flat row-major positions ascending, values) of the nonzero entries of a dense or
    sparse COO tensor; a sparse one is never densified."""
    import torch

    if tensor.layout == torch.sparse_coo:
        sparse = tensor.coalesce()
        values = sparse.values()
        keep = values != 0
        indices = sparse.indices()[:, keep]
        strides = torch.ones(len(tensor.shape), dtype=torch.int64)
        for axis in range(len(tensor.shape) - 2, -1, -1):
            strides[axis] = strides[axis + 1] * tensor.shape[axis + 1]
        positions = (indices * strides[:, None]).sum(0) if indices.numel() else \
            torch.zeros(0, dtype=torch.int64)
        return positions, values[keep].contiguous()
    flat = tensor.detach().contiguous().cpu().view(-1)
    where = torch.nonzero(flat, as_tuple=True)[0]
    return where, flat[where].contiguous()


def stored_sparse(tensor: Any) -> bool:
    """Whether `sparse_parts` stores this tensor as indices + values: at least
    SPARSE_MIN_BYTES dense, and its nonzeros at most half the dense bytes."""
    import torch

    dense = _dense_bytes(tensor)
    if dense < SPARSE_MIN_BYTES:
        return False
    if tensor.layout == torch.sparse_coo:
        count = int((tensor.coalesce().values() != 0).sum())
    else:
        count = int(torch.count_nonzero(tensor))
    small = tensor.numel() < (1 << 31)
    return 2 * count * ((4 if small else 8) + tensor.element_size()) <= dense


def sparse_parts(name: str, tensor: Any) -> dict[str, Any]:
    """`{name: tensor}`, or where that is at most half the bytes (`stored_sparse`), the
    tensor as `name.indices` (flat row-major positions of its nonzeros, ascending; int32
    when they fit), `name.values` (those entries) and `name.shape` (int64): one-hot tables
    are almost all zeros. A sparse COO tensor is never densified on the sparse route.
    `dense_from_parts` / `tensor_from_parts` invert it exactly."""
    import torch

    if not stored_sparse(tensor):
        dense = tensor.to_dense() if tensor.layout == torch.sparse_coo else tensor
        return {name: dense.detach().contiguous().cpu()}
    where, values = _flat_nonzeros(tensor)
    small = tensor.numel() < (1 << 31)
    return {f"{name}.indices": where.to(torch.int32) if small else where,
            f"{name}.values": values,
            f"{name}.shape": torch.tensor(tuple(tensor.shape), dtype=torch.int64)}


def sparse_digest_bytes(parts: dict[str, Any], name: str) -> list[bytes]:
    """What the digest covers of a tensor stored as parts: dtype, shape, then the flat
    positions (int64) and the values, so a sparse tensor is vouched for without ever
    being densified."""
    import torch

    values = parts[f"{name}.values"]
    shape = tuple(int(x) for x in parts[f"{name}.shape"].tolist())
    positions = parts[f"{name}.indices"].to(torch.int64).contiguous()
    head = f"{name}:{values.dtype}:{shape}:sparse;".encode()
    return [head, positions.numpy().tobytes(),
            values.contiguous().view(torch.uint8).numpy().tobytes() if values.numel() else b""]


def _checked_parts(tensors: dict[str, Any], name: str, path: Path) -> tuple | None:
    """(positions int64, values, dims) of a tensor stored sparse, checked: a bounded
    shape, ascending in-range positions, one value per position; None when absent."""
    import torch

    parts = [tensors.get(f"{name}.{part}") for part in SPARSE_PARTS]
    if any(part is None for part in parts):
        return None
    indices, values, shape = parts

    def malformed(why: str) -> ArtifactError:
        return ArtifactError(f"{path}: checksum mismatch: the sparse tensor {name} is "
                             f"malformed ({why}): the file is corrupt or was edited")

    if shape.dtype != torch.int64 or shape.ndim != 1 or bool((shape < 0).any()):
        raise malformed("shape")
    dims = [int(x) for x in shape.tolist()]
    numel = math.prod(dims)
    if numel * values.element_size() > MAX_DENSE_BYTES:
        raise malformed(f"{numel} entries declared")
    if (indices.ndim != 1 or values.ndim != 1 or indices.numel() != values.numel()
            or indices.dtype not in (torch.int32, torch.int64)):
        raise malformed("parts")
    positions = indices.to(torch.int64)
    if positions.numel() and (int(positions[0]) < 0 or int(positions[-1]) >= numel
                              or bool((positions[1:] <= positions[:-1]).any())):
        raise malformed("positions")
    return positions, values, dims


def _stored_both(tensors: dict[str, Any], name: str, path: Path) -> bool:
    parts = [tensors.get(f"{name}.{part}") for part in SPARSE_PARTS]
    if name in tensors and any(part is not None for part in parts):
        raise ArtifactError(f"{path}: tensor {name} is stored both dense and sparse")
    return name in tensors


def dense_from_parts(tensors: dict[str, Any], name: str, path: Path) -> Any:
    """The tensor `name` of a file: stored dense, or rebuilt dense from its sparse parts
    (checked: a bounded shape, ascending in-range positions, one value per position)."""
    return tensor_from_parts(tensors, name, path, dense_limit=math.inf)


def tensor_from_parts(tensors: dict[str, Any], name: str, path: Path,
                      dense_limit: float) -> Any:
    """Like `dense_from_parts`, but a tensor whose dense form is above `dense_limit`
    bytes comes back as a sparse COO tensor (checked the same way), never densified."""
    import torch

    if _stored_both(tensors, name, path):
        return tensors[name]
    checked = _checked_parts(tensors, name, path)
    if checked is None:
        return None
    positions, values, dims = checked
    if math.prod(dims) * values.element_size() <= dense_limit:
        dense = torch.zeros(math.prod(dims), dtype=values.dtype)
        dense[positions] = values
        return dense.view(dims)
    indices = torch.zeros(len(dims), positions.numel(), dtype=torch.int64)
    rest = positions
    for axis in range(len(dims) - 1, -1, -1):  # flat row-major → one index per axis
        indices[axis] = rest % dims[axis]
        rest = torch.div(rest, dims[axis], rounding_mode="floor")
    return torch.sparse_coo_tensor(indices, values, dims, is_coalesced=True,
                                   check_invariants=False)  # positions checked above
