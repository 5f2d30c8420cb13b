"""Execution traces: the learner's data, recorded from rollouts, kept in safetensors.

A trace is one rollout of a model on one input word: its tokens z_1..z_T (the prompt
followed by every fed-back token) and the model's raw output y_t at every position. Every
prefix z_1..z_t with y_t is one regression sample for the learner. Traces carry the
Interface they were recorded with, so a learned model can run exactly like the source.

On disk (one safetensors file, never pickle):
- tensors ``tokens`` (ΣT, d) float64, ``outputs`` (ΣT, d_out) float64 — all sequences
  packed one after another — and ``offsets`` (n+1,) int64: sequence i is rows
  offsets[i]:offsets[i+1];
- string metadata ``lat_traces_schema``, ``interface`` (Interface JSON), ``inputs`` (JSON
  list of symbol lists), ``steps`` and ``stopped_by`` (JSON lists, or ``null`` when
  unknown), ``source`` (sha256 of the recording model, or empty) and ``sha256`` of the three
  tensors. Loading checks all of it and refuses any defect with one ArtifactError line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lat.runtime.errors import ArtifactError
from lat.runtime.execute import RunResult, rollout
from lat.runtime.interface import Interface
from lat.runtime.model import CompiledModel
from lat.runtime.storage import read_safetensors, write_safetensors

TRACES_SCHEMA = "1"

__all__ = ["TRACES_SCHEMA", "Traces", "chunked_rollouts", "load_traces", "merge_traces",
           "record_in_chunks", "record_traces", "rollouts", "sample_words", "save_traces"]


@dataclass(frozen=True, eq=False)
class Traces:
    """Recorded rollouts: per input word, tokens (T_i, d) and outputs (T_i, d_out), float64.

    `steps` and `stopped_by` (per input, as in RunResult) are kept when known so that a
    model learned from traces alone can be checked against the recorded runs exactly.
    """

    tokens: list[np.ndarray]
    outputs: list[np.ndarray]
    inputs: list[tuple[str, ...]]
    interface: Interface
    steps: list[int] | None = None
    stopped_by: list[str] | None = None
    source: str | None = None  # sha256 of the model that produced the traces

    def __post_init__(self) -> None:
        if not (len(self.tokens) == len(self.outputs) == len(self.inputs)):
            raise ValueError("tokens, outputs and inputs must have one entry per input")
        for name in ("steps", "stopped_by"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.inputs):
                raise ValueError(f"{name} must have one entry per input")

    def __len__(self) -> int:
        return len(self.inputs)

    def first(self, count: int) -> Traces:
        """The first `count` recordings (those a fit of an earlier, shorter set saw)."""
        return self.select(range(min(count, len(self))))

    def select(self, indices: Sequence[int]) -> Traces:
        """The recordings at `indices`, in that order."""
        def pick(items: list | None) -> list | None:
            return None if items is None else [items[i] for i in indices]

        return replace(self, tokens=pick(self.tokens), outputs=pick(self.outputs),
                       inputs=pick(self.inputs), steps=pick(self.steps),
                       stopped_by=pick(self.stopped_by))

    @property
    def samples(self) -> int:
        """Number of regression pairs (prefix, output): Σ_i T_i."""
        return int(sum(t.shape[0] for t in self.tokens))

    def packed(self) -> dict[str, np.ndarray]:
        """The three on-disk tensors: packed tokens, packed outputs, int64 offsets."""
        d, d_out = self.interface.d, self.interface.d_out
        lengths = [t.shape[0] for t in self.tokens]
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
        tokens = (np.concatenate([np.asarray(t, np.float64) for t in self.tokens])
                  if self.tokens else np.zeros((0, d)))
        outputs = (np.concatenate([np.asarray(o, np.float64) for o in self.outputs])
                   if self.outputs else np.zeros((0, d_out)))
        return {
            "tokens": np.ascontiguousarray(tokens.reshape(-1, d), dtype=np.float64),
            "outputs": np.ascontiguousarray(outputs.reshape(-1, d_out), dtype=np.float64),
            "offsets": offsets,
        }

    def sha256(self) -> str:
        return _digest(self.packed())


def sample_words(
    interface: Interface, count: int, max_len: int, rng: np.random.Generator
) -> list[tuple[str, ...]]:
    """`count` random words: length uniform on 0..max_len, symbols uniform and independent.

    An interface that declares ``single_symbol_input`` (a memory: the input is one key)
    gets words of exactly one symbol.
    """
    alphabet = interface.sampling_alphabet
    if not alphabet:
        return [() for _ in range(count)]
    if getattr(interface, "single_symbol_input", False):
        lengths = np.ones(count, dtype=np.int64)
    else:
        lengths = rng.integers(0, max_len + 1, size=count)
    symbols = rng.integers(0, len(alphabet), size=int(lengths.sum()))
    words, start = [], 0
    for length in lengths.tolist():
        words.append(tuple(alphabet[i] for i in symbols[start : start + length].tolist()))
        start += length
    return words


def record_traces(model: CompiledModel, inputs: Sequence[Sequence[str]]) -> Traces:
    """Roll `model` out on every input in float64 and keep tokens and raw outputs."""
    words = [tuple(w) for w in inputs]
    results = rollout(model, words, record=True, dtype="fp64")
    return Traces(
        tokens=[np.asarray(r.tokens, dtype=np.float64) for r in results],
        outputs=[np.asarray(r.outputs, dtype=np.float64) for r in results],
        inputs=words,
        interface=model.interface,
        steps=[r.steps for r in results],
        stopped_by=[r.stopped_by for r in results],
        source=model.sha256(),
    )


def record_in_chunks(model: CompiledModel, words: Sequence[Sequence[str]],
                     progress: Callable[[str, int, int], None] | None = None,
                     chunk: int = 256) -> Traces:
    """`record_traces` a chunk of words at a time, reporting progress ("record") after each."""
    parts = []
    for start in range(0, len(words), chunk):
        parts.append(record_traces(model, words[start: start + chunk]))
        if progress is not None:
            progress("record", min(start + chunk, len(words)), len(words))
    return Traces(
        tokens=[t for p in parts for t in p.tokens],
        outputs=[o for p in parts for o in p.outputs],
        inputs=[tuple(w) for w in words],
        interface=model.interface,
        steps=[s for p in parts for s in (p.steps or [])],
        stopped_by=[s for p in parts for s in (p.stopped_by or [])],
        source=model.sha256(),
    )


def chunked_rollouts(
    model: CompiledModel, words: Sequence[Sequence[str]], *, dtype: str = "fp64",
    record: bool = True, chunk: int = 256,
    progress: Callable[[str, int, int], None] | None = None, phase: str = "rollout",
) -> Iterator[list[RunResult]]:
    """`rollout` over `words` in chunks, yielding each chunk's runs (in input order) and
    reporting progress after it: long lists without holding every run at once."""
    for start in range(0, len(words), chunk):
        yield rollout(model, [tuple(w) for w in words[start: start + chunk]], dtype=dtype,
                      record=record)
        if progress is not None:
            progress(phase, min(start + chunk, len(words)), len(words))


def rollouts(model: CompiledModel, words: Sequence[Sequence[str]], **options: object
             ) -> list[RunResult]:
    """Every run of `chunked_rollouts` (same options) as one list."""
    return [run for runs in chunked_rollouts(model, words, **options) for run in runs]


def merge_traces(first: Traces, second: Traces) -> Traces:
    """Two recordings of the same source as one."""
    return Traces(
        tokens=[*first.tokens, *second.tokens],
        outputs=[*first.outputs, *second.outputs],
        inputs=[*first.inputs, *second.inputs],
        interface=first.interface,
        steps=[*(first.steps or []), *(second.steps or [])],
        stopped_by=[*(first.stopped_by or []), *(second.stopped_by or [])],
        source=first.source,
    )


def save_traces(traces: Traces, path: str | os.PathLike) -> str:
    """Write traces atomically (temp file + rename); return the tensors' sha256."""
    tensors = traces.packed()
    digest = _digest(tensors)
    metadata = {
        "lat_traces_schema": TRACES_SCHEMA,
        "interface": traces.interface.to_json(),
        "inputs": json.dumps([list(w) for w in traces.inputs]),
        "steps": json.dumps(traces.steps),
        "stopped_by": json.dumps(traces.stopped_by),
        "source": traces.source or "",
        "sha256": digest,
    }
    write_safetensors(path, tensors, metadata, framework="np")
    return digest


def load_traces(path: str | os.PathLike) -> Traces:
    """Read and check a traces file; any defect raises ArtifactError with one line."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, "traces file", framework="np")
    if metadata.get("lat_traces_schema") != TRACES_SCHEMA:
        raise ArtifactError(
            f"{path}: traces schema {metadata.get('lat_traces_schema')!r} is not "
            f"{TRACES_SCHEMA!r} (record the traces again with this version of lat)"
        )
    if set(tensors) != {"tokens", "outputs", "offsets"}:
        raise ArtifactError(f"{path}: expected tensors tokens, outputs, offsets; "
                            f"found {sorted(tensors)}")
    if metadata.get("sha256") != _digest(tensors):
        raise ArtifactError(f"{path}: tensor checksum mismatch: the file is corrupt")
    try:
        interface = Interface.from_json(metadata.get("interface", ""))
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    try:
        inputs = [tuple(str(s) for s in w) for w in json.loads(metadata["inputs"])]
        steps = json.loads(metadata.get("steps", "null"))
        stopped_by = json.loads(metadata.get("stopped_by", "null"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: malformed traces metadata ({exc})") from None
    tokens, outputs, offsets = tensors["tokens"], tensors["outputs"], tensors["offsets"]
    problem = _shape_problem(tokens, outputs, offsets, interface, len(inputs))
    if problem:
        raise ArtifactError(f"{path}: {problem}")
    bounds = offsets.tolist()
    try:
        return Traces(
            tokens=[tokens[a:b].copy() for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
            outputs=[outputs[a:b].copy() for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
            inputs=inputs,
            interface=interface,
            steps=None if steps is None else [int(s) for s in steps],
            stopped_by=None if stopped_by is None else [str(s) for s in stopped_by],
            source=metadata.get("source") or None,
        )
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: malformed traces metadata ({exc})") from None


def _shape_problem(
    tokens: np.ndarray, outputs: np.ndarray, offsets: np.ndarray, interface: Interface, n: int
) -> str | None:
    if tokens.dtype != np.float64 or outputs.dtype != np.float64 or offsets.dtype != np.int64:
        return "tensors must be float64 tokens/outputs and int64 offsets"
    if tokens.ndim != 2 or tokens.shape[1] != interface.d:
        return f"tokens have shape {tokens.shape}, expected (rows, {interface.d})"
    if outputs.ndim != 2 or outputs.shape != (tokens.shape[0], interface.d_out):
        return f"outputs have shape {outputs.shape}, expected ({tokens.shape[0]}, " \
               f"{interface.d_out})"
    if offsets.ndim != 1 or offsets.size != n + 1:
        return f"offsets have {offsets.size} entries for {n} inputs"
    if offsets[0] != 0 or offsets[-1] != tokens.shape[0] or np.any(np.diff(offsets) < 0):
        return "offsets are not a non-decreasing split of the token rows"
    return None


def _digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over name, dtype, shape and raw bytes of tokens, outputs, offsets."""
    digest = hashlib.sha256()
    for name in ("tokens", "outputs", "offsets"):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}:{array.dtype.str}:{tuple(array.shape)};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
