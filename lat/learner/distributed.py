"""The regression sharded over torch.distributed: each rank holds a shard of the traces.

Every rank computes the sparse reduced features of its own sequences only. The fit then
needs three collective steps (the certificate's (docs/ARCHITECTURE.md) block structure, made
global):

1. **Support and blocks.** Each rank finds its shard's support columns and their
   connected components; the (column, local component) pairs are all-gathered and every
   rank computes the same global components from them (two columns are linked when some
   rank links them) — the blocks the single-process fit finds on all the data.
2. **Gram.** Each rank accumulates, per global block, the dense float64 Gram X_bᵀX_b,
   X_bᵀY_b and the sample count of its shard (row batches, as `solve.fit` does); one
   all-reduce (sum) of the concatenation gives the Grams of all the data.
3. **Solve and check.** Rank 0 diagonalises every block's Λ_b, solves the minimum-norm
   least squares (with one refinement step) and recovers heads; the result is broadcast.
   Each rank then measures the training error of coefficients and heads on its shard and
   an all-reduce (max) gives the global figures.

The result is a `solve.Fit` equal to the single-process one up to round-off (summation
order only: tested to 1e-9). Where every shard's tokens repeat (one-hot programs), steps 2–3
move count-compressed rows instead of Grams (compress.py: ≤ |U| rows per current token and
chunk, the same Gram): one all-gather, and rank 0 solves each block in the dual form when
the rows are fewer than the columns (`solve.solve_rows`); otherwise the Grams are summed
and solved in the primal form.

Backends: gloo on CPU (the default; used by `learn(..., workers=N)`), nccl where
`backend="nccl"` is asked for — the Gram is small, the features are built on the CPU.

Local processes: `fit_workers(traces, workers)` spawns `workers` processes with
torch.multiprocessing on 127.0.0.1 (a free port) and returns rank 0's Fit. The CLI's
`lat learn --workers N` goes through `learn(source, workers=N)`.

Several machines (torchrun; every node needs the traces file and lat installed):

    torchrun --nnodes 2 --nproc-per-node 8 --node-rank <0|1> \\
        --rdzv-backend c10d --rdzv-endpoint <host-of-node-0>:29500 \\
        -m lat.learner.distributed traces.safetensors --out learned.safetensors

Each rank loads the traces and keeps sequences rank, rank + world, …; rank 0 writes the
learned model (a runtime artifact with the traces' interface) and prints a JSON summary.
A single machine: `torchrun --standalone --nproc-per-node 4 -m lat.learner.distributed
traces.safetensors --out learned.safetensors`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from lat.learner.compress import PrefixCounts, compress_rows
from lat.learner.features import Coefficients, block_layout, column_labels, n_features
from lat.learner.solve import (
    COMPRESS_MIN_RATIO,
    DENSE_LIMIT,
    Block,
    BlockTooLarge,
    Fit,
    heads_of,
    row_batches,
    sequence_pairs,
    solve_gram,
    solve_rows,
    stack_features,
    support_coefficients,
)

__all__ = ["fit_workers", "main", "sharded_fit"]


def sharded_fit(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    d: int,
    d_out: int,
    *,
    pack_heads: bool = True,
    minimise: bool = True,
) -> Fit:
    """The fit of the union of every rank's `pairs` (this rank's shard); call on every rank
    of an initialised process group. Returns the same Fit on every rank."""
    seconds: dict[str, float] = {}
    rank = dist.get_rank()
    clock = time.perf_counter()
    pairs = sequence_pairs(pairs)
    tokens = [t for t, _ in pairs]
    if pairs and sum(t.shape[0] for t in tokens):
        rows, cols, vals = stack_features(tokens, None)
        Y = np.concatenate([o for _, o in pairs], axis=0)
    else:
        rows = cols = np.zeros(0, np.int64)
        vals = np.zeros(0, np.float64)
        Y = np.zeros((sum(t.shape[0] for t in tokens), d_out))
    n_local = Y.shape[0]
    seconds["features"] = time.perf_counter() - clock

    # 1. global support and blocks
    clock = time.perf_counter()
    local_support, local = np.unique(cols, return_inverse=True)
    local_labels = column_labels(rows, local, local_support.size)
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (local_support, local_labels))
    all_cols = np.concatenate([np.asarray(c, np.int64) for c, _ in gathered])
    offset, groups = 0, []
    for _, lab in gathered:
        groups.append(np.asarray(lab, np.int64) + offset)
        offset += int(lab.max()) + 1 if len(lab) else 0
    all_groups = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    support, index = np.unique(all_cols, return_inverse=True)
    labels = column_labels(all_groups, index, support.size)
    col_order, col_bounds, support_position = block_layout(labels)
    n_blocks = col_bounds.size - 1
    sizes = np.diff(col_bounds)
    if np.any(sizes.astype(np.int64) ** 2 > DENSE_LIMIT):
        raise BlockTooLarge(f"a connected block of {int(sizes.max()):,} features is too large "
                            "to solve densely; train on fewer or shorter words")
    seconds["components"] = time.perf_counter() - clock

    # 2'. where every shard's tokens repeat enough: count-compressed rows, one all-gather,
    # and rank 0 solves each block from them (the dual where they are fewer than columns)
    prefix_counts = PrefixCounts(tokens)
    compressible = torch.tensor([float(prefix_counts.vocabulary * COMPRESS_MIN_RATIO
                                       <= max(n_local, 1))])
    dist.all_reduce(compressible, op=dist.ReduceOp.MIN)
    if compressible.item() > 0:
        return _fit_from_rows(pairs, d, d_out, rows, cols, vals, Y, prefix_counts, support,
                              labels, col_order, col_bounds, support_position, seconds,
                              pack_heads=pack_heads, minimise=minimise)

    # 2. per-block Grams of this shard, one all-reduce
    clock = time.perf_counter()
    g_offsets = np.concatenate([[0], np.cumsum(sizes * sizes + sizes * d_out + 1)])
    buffer = np.zeros(int(g_offsets[-1]) + 3, dtype=np.float64)
    position = np.searchsorted(support, cols)
    entry_block = labels[position]
    order = np.lexsort((rows, entry_block))
    entry_bounds = np.searchsorted(entry_block[order], np.arange(n_blocks + 1))
    for b in range(n_blocks):
        take = order[entry_bounds[b] : entry_bounds[b + 1]]
        if take.size == 0:
            continue
        n = int(sizes[b])
        r, c, v = rows[take], support_position[position[take]], vals[take]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        sample_rows = r[starts]
        m = sample_rows.size
        local_row = np.repeat(np.arange(m), np.diff(np.r_[starts, r.size]))
        G = np.zeros((n, n))
        XtY = np.zeros((n, d_out))
        Yb = Y[sample_rows]
        for first, X in row_batches(local_row, c, v, m, n):
            G += X.T @ X
            XtY += X.T @ Yb[first : first + X.shape[0]]
        at = int(g_offsets[b])
        buffer[at : at + n * n] = G.ravel()
        buffer[at + n * n : at + n * n + n * d_out] = XtY.ravel()
        buffer[at + n * n + n * d_out] = m
    featured = np.zeros(n_local, dtype=bool)
    featured[rows] = True
    buffer[-3] = n_local
    buffer[-2] = n_local - np.count_nonzero(featured)
    buffer[-1] = len(pairs)
    summed = torch.from_numpy(buffer)
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    buffer = summed.numpy()
    N = int(round(buffer[-3]))
    if N == 0:
        raise ValueError("no training samples: every sequence is empty")
    seconds["gram"] = time.perf_counter() - clock

    # 3. rank 0 solves; broadcast
    clock = time.perf_counter()
    solved = None
    if rank == 0:
        values = np.zeros((support.size, d_out))
        blocks = []
        for b in range(n_blocks):
            n = int(sizes[b])
            at = int(g_offsets[b])
            G = buffer[at : at + n * n].reshape(n, n) / N
            XtY = buffer[at + n * n : at + n * n + n * d_out].reshape(n, d_out) / N
            lam, U_r, cutoff, w = solve_gram(G, XtY)
            block_columns = col_order[col_bounds[b] : col_bounds[b + 1]]
            values[block_columns] = w
            blocks.append(Block(support[block_columns], lam, U_r, cutoff,
                                int(round(buffer[at + n * n + n * d_out])), False))
        solved = (values, blocks)
    coefficients, blocks, V, Q, heads_before = _shared_heads(
        solved, d, d_out, support, pack_heads, minimise, labels, support_position)
    seconds["solve"] = time.perf_counter() - clock

    return _checked_fit(d, d_out, N, int(round(buffer[-1])), int(round(buffer[-2])), support,
                        coefficients, blocks, labels, support_position, V, Q, heads_before,
                        rows, cols, vals, Y, seconds)


def _shared_heads(solved: tuple[np.ndarray, list[Block]] | None, d: int, d_out: int,
                  support: np.ndarray, pack_heads: bool, minimise: bool, labels: np.ndarray,
                  support_position: np.ndarray
                  ) -> tuple[Coefficients, tuple[Block, ...], np.ndarray, np.ndarray, int]:
    """Rank 0 turns its solved blocks (`solved`; None on the other ranks) into heads; one
    broadcast gives every rank the coefficients, blocks and heads."""
    payload: list[object] = [None]
    if solved is not None:
        values, blocks = solved
        V, Q, heads_before = heads_of(Coefficients(d, d_out, support, values), support,
                                      pack_heads, minimise, blocks, labels, support_position)
        payload = [(values, tuple(blocks), V, Q, heads_before)]
    dist.broadcast_object_list(payload, src=0)
    values, blocks, V, Q, heads_before = payload[0]
    return Coefficients(d, d_out, support, values), blocks, V, Q, heads_before


def _checked_fit(d: int, d_out: int, N: int, sequences: int, featureless: int,
                 support: np.ndarray, coefficients: Coefficients, blocks: Sequence[Block],
                 labels: np.ndarray, support_position: np.ndarray, V: np.ndarray,
                 Q: np.ndarray, heads_before: int, rows: np.ndarray, cols: np.ndarray,
                 vals: np.ndarray, Y: np.ndarray, seconds: dict[str, float]) -> Fit:
    """Step 4: the training errors measured on every shard (one all-reduce, max)."""
    n_local = Y.shape[0]
    # 4. errors on every shard, one all-reduce (max)
    clock = time.perf_counter()
    predicted = coefficients.predict(rows, cols, vals, n_local)
    errors = np.zeros(3)
    if n_local:
        errors[0] = float(np.abs(predicted - Y).max())
        errors[2] = float(np.abs(Y).max())
        heads = Coefficients(d, d_out, support, support_coefficients(V, Q, support))
        errors[1] = float(np.abs(heads.predict(rows, cols, vals, n_local) - Y).max())
    reduced = torch.from_numpy(errors)
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    errors = reduced.numpy()
    seconds["train_check"] = time.perf_counter() - clock

    return Fit(
        d=d,
        d_out=d_out,
        samples=N,
        sequences=sequences,
        features_total=n_features(d),
        features_used=int(support.size),
        coefficients=coefficients,
        blocks=tuple(blocks),
        support_block=labels,
        support_position=support_position,
        V=V,
        Q=Q,
        train_max_abs_error=float(errors[1]),
        coefficient_max_abs_error=float(errors[0]),
        output_scale=float(errors[2]),
        featureless_samples=featureless,
        seconds=seconds,
        heads_before_minimising=heads_before,
    )


def _fit_from_rows(pairs: Sequence, d: int, d_out: int, rows: np.ndarray, cols: np.ndarray,
                   vals: np.ndarray, Y: np.ndarray, prefix_counts: PrefixCounts,
                   support: np.ndarray, labels: np.ndarray, col_order: np.ndarray,
                   col_bounds: np.ndarray, support_position: np.ndarray,
                   seconds: dict[str, float], *, pack_heads: bool, minimise: bool) -> Fit:
    """Steps 2–4 from count-compressed rows: each rank compresses its shard's rows of every
    block (compress.py: the same Gram and XᵀY from ≤ |U| rows per current token), one
    all-gather brings them to rank 0, which solves every block with `solve_rows`."""
    clock = time.perf_counter()
    n_blocks = col_bounds.size - 1
    position = np.searchsorted(support, cols)
    entry_block = labels[position]
    order = np.lexsort((rows, entry_block))
    entry_bounds = np.searchsorted(entry_block[order], np.arange(n_blocks + 1))
    compressed = []
    for b in range(n_blocks):
        take = order[entry_bounds[b] : entry_bounds[b + 1]]
        n = int(col_bounds[b + 1] - col_bounds[b])
        if take.size == 0:
            compressed.append((np.zeros((0, n)), np.zeros((0, d_out)), 0))
            continue
        r, c, v = rows[take], support_position[position[take]], vals[take]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        sample_rows = r[starts]
        local_row = np.repeat(np.arange(sample_rows.size), np.diff(np.r_[starts, r.size]))
        Z, Yz = compress_rows(prefix_counts, sample_rows, local_row, c, v, n, Y[sample_rows])
        compressed.append((Z, Yz, int(sample_rows.size)))
    featured = np.zeros(Y.shape[0], dtype=bool)
    featured[rows] = True
    counts = torch.tensor([float(Y.shape[0]), float(Y.shape[0] - np.count_nonzero(featured)),
                           float(len(pairs))], dtype=torch.float64)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    N, featureless, sequences = (int(round(x)) for x in counts.tolist())
    if N == 0:
        raise ValueError("no training samples: every sequence is empty")
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, compressed)
    seconds["gram"] = time.perf_counter() - clock

    clock = time.perf_counter()
    solved = None
    if dist.get_rank() == 0:
        values = np.zeros((support.size, d_out))
        blocks = []
        for b in range(n_blocks):
            block_columns = col_order[col_bounds[b] : col_bounds[b + 1]]
            Z = np.concatenate([shard[b][0] for shard in gathered])
            Yz = np.concatenate([shard[b][1] for shard in gathered])
            block, w = solve_rows(Z, Yz, support[block_columns], N,
                                  sum(shard[b][2] for shard in gathered))
            values[block_columns] = w
            blocks.append(block)
        solved = (values, blocks)
    coefficients, blocks, V, Q, heads_before = _shared_heads(
        solved, d, d_out, support, pack_heads, minimise, labels, support_position)
    seconds["solve"] = time.perf_counter() - clock
    return _checked_fit(d, d_out, N, sequences, featureless, support, coefficients, blocks,
                        labels, support_position, V, Q, heads_before, rows, cols, vals, Y,
                        seconds)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, pairs: list, d: int, d_out: int,
            options: dict, queue: object) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fitted = sharded_fit(pairs[rank::world], d, d_out, **options)
        if rank == 0:
            queue.put(fitted)
    finally:
        dist.destroy_process_group()


def fit_workers(data: object, workers: int, *, pack_heads: bool = True,
                minimise: bool = True) -> Fit:
    """`solve.fit` on `workers` local processes (gloo on 127.0.0.1); sequence i goes to
    rank i mod workers. workers ≤ 1 runs `solve.fit` in this process."""
    from lat.learner.solve import fit

    pairs = sequence_pairs(data)
    if workers <= 1:
        return fit(pairs, pack_heads=pack_heads, minimise=minimise)
    if not pairs:
        raise ValueError("no training samples: every sequence is empty")
    d, d_out = pairs[0][0].shape[1], pairs[0][1].shape[1]
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    try:
        processes = mp.spawn(
            _worker,
            args=(workers, _free_port(), pairs, d, d_out,
                  {"pack_heads": pack_heads, "minimise": minimise}, queue),
            nprocs=workers, join=False,
        )
        fitted = None
        while fitted is None:
            if not queue.empty():
                fitted = queue.get()
                break
            # all done (or one failed: join raises) and still nothing in the queue
            if processes.join(timeout=0.05) and queue.empty():
                raise RuntimeError("distributed fit: workers exited without a result")
        while not processes.join():
            pass
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return fitted


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point: `-m lat.learner.distributed TRACES --out MODEL`."""
    from lat.learner.traces import load_traces
    from lat.runtime.model import CompiledModel

    parser = argparse.ArgumentParser(prog="python -m lat.learner.distributed")
    parser.add_argument("traces")
    parser.add_argument("--out", required=True)
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    args = parser.parse_args(argv)
    dist.init_process_group(args.backend)
    try:
        traces = load_traces(args.traces)
        rank, world = dist.get_rank(), dist.get_world_size()
        pairs = list(zip(traces.tokens, traces.outputs, strict=True))[rank::world]
        fitted = sharded_fit(pairs, traces.interface.d, traces.interface.d_out)
        if rank == 0:
            model = CompiledModel(
                V=torch.from_numpy(fitted.V), Q=torch.from_numpy(fitted.Q),
                interface=traces.interface,
                info={"origin": "learned", "learned_from": traces.source,
                      "traces_sha256": traces.sha256(), "samples": fitted.samples,
                      "traces": len(traces), "heads": fitted.heads, "workers": world},
            )
            model.save(args.out)
            print(json.dumps({"samples": fitted.samples, "heads": fitted.heads,
                              "train_max_abs_error": fitted.train_max_abs_error,
                              "features_used": fitted.features_used,
                              "features_total": fitted.features_total, "workers": world}))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
