"""The parallel and chunked forms (prefill): whole sequences at once.

- `mhla_parallel`   one masked (T×T) attention block: O(T²), best for short T;
- `mhla_chunked`    chunks of C tokens with the shared state carried between them.

Why they are fast (docs/ARCHITECTURE.md, "The model"). Every head attends with the *same* keys and
values — the
raw tokens — so one state S_t = Σ_{s≤t} z_s z_sᵀ (d×d) serves all H heads, where a
textbook per-head kernel keeps H states of d×d_out and updates each. The chunked form
therefore computes, per chunk of C tokens and for all heads at once,

    u_t^h = S_prev (Q_h z_t) + Σ_{s in chunk, s≤t} z_s (z_sᵀ Q_h z_t)      (d-vectors)
    y_t   = Σ_h V_h u_t^h  =  [u_t^1 … u_t^H] · Wᵀ                          (one GEMM)

with the queries of all heads in one fused projection, the value maps applied once after
the attention (a GEMM with inner dimension H·d, not d), one d×d state update per chunk
instead of H, and small chunks (the inter-chunk work no longer grows with C, so the
quadratic intra-chunk part is kept short). Work is tiled over blocks of a few hundred
tokens so that every intermediate stays in cache. The parallel form is the same code with
the whole sequence as one chunk.

On a multi-core CPU the chunked form runs row groups in worker threads, one thread per
op (`_chunked_rows`): its ops are small, and OpenMP's barrier per op is what collapses
when a core is shared.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from lat.runtime.forms.layouts import (
    Prepared,
    RecurrentState,
    finish,
    fold,
    format_name,
    mask_lengths,
    prepare,
)

_MASKS: dict[tuple, torch.Tensor] = {}


def _causal_mask(C: int, H: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(C·H, C) with entry [(t, h), s] = 1 if s ≤ t: the causal mask of a chunk's scores."""
    key = (C, H, dtype, device)
    if key not in _MASKS:
        tril = torch.ones(C, C, dtype=dtype, device=device).tril()
        _MASKS[key] = tril[:, None, :].expand(C, H, C).reshape(C * H, C).contiguous()
    return _MASKS[key]


def choose_chunk(
    batch: int, T: int, heads: int, d: int, device: torch.device | str = "cpu",
    weights: torch.dtype = torch.float32,
) -> int:
    """The chunk length C for a shape (measured on a 2-core AVX-512 CPU; 64 on a GPU).

    Per token the fused form costs 4·H·d² + 2·H·d·d_out + 2·d² (independent of C) plus
    4·H·C·d for the masked intra-chunk block, so C is as small as the matmul efficiency
    allows: 16 on a CPU for fp32, 32 for bf16 (whose matmuls want longer inner loops).
    """
    if torch.device(device).type == "cuda":
        return 64
    C = 32 if weights in (torch.bfloat16, torch.float16) else 16
    return max(1, min(C, T))


def choose_block(batch: int, T: int, heads: int, d: int, chunk: int,
                 device: torch.device | str = "cpu") -> int:
    """Tokens per row processed together: on a CPU, ~1 MiB of queries (cache-resident);
    on a GPU, everything at once."""
    if torch.device(device).type == "cuda":
        return max(chunk, math.ceil(T / chunk) * chunk)
    tokens = max(1, (1 << 18) // max(heads * d, 1))  # 2^18 floats of queries per block
    per_row = max(chunk, (tokens // max(batch, 1)) // chunk * chunk)
    return min(per_row, max(chunk, math.ceil(T / chunk) * chunk))


def _chunked_core(
    Z: torch.Tensor, p: Prepared, C: int, L: int, S: torch.Tensor,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused shared-state form on Z (B, T, d) with T a multiple of C.

    Returns outputs (B, T, d_out) in the state format (written into `out` if given) and
    the final state S.
    """
    B, T, d = Z.shape
    H, d_out, cd, sd = p.H, p.d_out, p.compute, p.state
    Y = out if out is not None else torch.empty(B, T, d_out, dtype=sd, device=Z.device)
    mask = _causal_mask(C, H, cd, Z.device)
    # The states before each chunk of a block, in two buffers used in turn: slot 0 of the
    # next block's buffer receives the running S, so nothing is copied between blocks.
    N_max = min(L, T) // C
    buffers = [torch.empty(B, N_max, d, d, dtype=sd, device=Z.device) for _ in range(2)]
    buffers[0][:, 0] = S
    for i, t0 in enumerate(range(0, T, L)):
        Lb = min(L, T - t0)
        N = Lb // C
        Zb = Z[:, t0 : t0 + Lb].contiguous().view(B * N, C, d)  # this block's chunks
        P = torch.matmul(Zb.view(B * Lb, d), p.Qt_c).view(B * N, C * H, d)  # all queries
        A = torch.bmm(P, Zb.transpose(1, 2))  # [(t, h), s] = z_sᵀ Q_h z_t
        A.mul_(mask)  # causal inside the chunk
        Zs = Zb if cd == sd else Zb.to(sd)
        G = torch.bmm(Zs.transpose(1, 2), Zs).view(B, N, d, d)  # each chunk's Σ z zᵀ
        # Exclusive prefix sums over the block's chunks: a few (B, d, d) adds (a cumsum
        # along a strided dimension costs more than the matmuls around it).
        S_prev, following = buffers[i % 2][:, :N], buffers[(i + 1) % 2]
        for n in range(1, N):
            torch.add(S_prev[:, n - 1], G[:, n - 1], out=S_prev[:, n])
        torch.add(S_prev[:, N - 1], G[:, N - 1], out=following[:, 0])
        operand = S_prev.contiguous() if N_max > N else S_prev  # a short last block
        U = torch.bmm(P, operand.view(B * N, d, d).to(cd))  # S_prev Q_h z_t (S symmetric)
        U.baddbmm_(A, Zb)  # + Σ_{s≤t} z_s (z_sᵀ Q_h z_t)
        Y[:, t0 : t0 + Lb] = torch.matmul(U.view(B, Lb, H * p.d), p.Wt_c)  # Σ_h V_h u^h
    S = buffers[len(range(0, T, L)) % 2][:, 0].clone()
    return Y, S


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _in_modes(modes: tuple[bool, bool], fn, *args):  # noqa: ANN001, ANN202
    """Run fn in a worker thread under the caller's inference/grad modes."""
    with torch.inference_mode(modes[0]), torch.set_grad_enabled(modes[1]):
        return fn(*args)


def _chunked_rows(
    Z: torch.Tensor, p: Prepared, C: int, L: int, S: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_chunked_core`, on a multi-core CPU split into row groups run side by side.

    Rows are independent, so P groups of rows run in P threads, each op on one thread.
    A block's ops are small (~0.1 ms), and an OpenMP team pays a barrier per op: when
    another process holds one of the cores, every barrier waits for it, and a prefill
    spread over the team can run 10-100× slower than on one thread (measured on a
    shared 2-core machine). Row groups never wait for each other; torch releases the
    GIL inside each op. Used when the intra-op setting allows several threads, the
    batch has several rows and no other prefill holds the pool (the thread count is a
    process-wide setting, changed for the duration and restored).
    """
    B, T, _ = Z.shape
    threads = torch.get_num_threads()
    groups = min(threads, B)
    if Z.device.type != "cpu" or groups < 2 or not _POOL_LOCK.acquire(blocking=False):
        return _chunked_core(Z, p, C, L, S)
    global _POOL
    try:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                       thread_name_prefix="lat-prefill")
        Y = torch.empty(B, T, p.d_out, dtype=p.state, device=Z.device)
        edges = [B * g // groups for g in range(groups + 1)]
        block = max(C, L * B // max(edges[1] - edges[0], 1) // C * C)  # same tokens/block
        modes = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())  # thread-local
        torch.set_num_threads(1)
        try:
            futures = [
                _POOL.submit(_in_modes, modes, _chunked_core, Z[a:b], p, C, block, S[a:b],
                             Y[a:b])
                for a, b in zip(edges[:-1], edges[1:], strict=True)
            ]
            states = [future.result()[1] for future in futures]
        finally:
            torch.set_num_threads(threads)
        return Y, torch.cat(states)
    finally:
        _POOL_LOCK.release()


def _prefill(
    Z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float,
    normalise: bool,
    chunk: int | None,
    block: int | None,
    state: RecurrentState | None,
    lengths: torch.Tensor | None,
    weights: str | None,
    parallel: bool,
) -> torch.Tensor:
    B, T, d = Z.shape
    p = prepare(V, Q, weights or format_name(Z.dtype))
    start = state.length if state is not None else 0
    if T == 0:
        return torch.zeros(B, 0, p.d_out, dtype=p.state, device=Z.device)
    Z = mask_lengths(Z, lengths)
    C = T if parallel else (chunk or choose_chunk(B, T, p.H, d, Z.device, p.compute))
    T_pad = math.ceil(T / C) * C
    L = T_pad if parallel else (block or choose_block(B, T_pad, p.H, d, C, Z.device))
    L = max(C, L // C * C)
    Zc = Z.to(p.compute)
    if T_pad != T:  # zero tokens at the end change nothing before them, nor the state
        Zc = torch.cat([Zc, Zc.new_zeros(B, T_pad - T, d)], dim=1)
    if state is not None and state.layout == "shared":
        S0 = state.tensor.to(p.state)
    else:
        S0 = torch.zeros(B, d, d, dtype=p.state, device=Z.device)
    Y, S = _chunked_rows(Zc, p, C, L, S0)
    Y = Y[:, :T]
    if state is not None:
        if state.layout == "shared":
            state.tensor.copy_(S)
        else:  # the folded past answers every query directly: y += N_prev z
            Y = Y + torch.bmm(Z.to(p.state), state.tensor)
            state.tensor.add_(fold(S, p))
        state.length += T
    return finish(Y, scale, normalise, start)


def mhla_parallel(
    Z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    *,
    state: RecurrentState | None = None,
    lengths: torch.Tensor | None = None,
    weights: str | None = None,
) -> torch.Tensor:
    """Masked form: the whole sequence as one chunk (one causal T×T block per head)."""
    return _prefill(Z, V, Q, scale, normalise, None, None, state, lengths, weights, True)


def mhla_chunked(
    Z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    chunk: int | None = None,
    *,
    block: int | None = None,
    state: RecurrentState | None = None,
    lengths: torch.Tensor | None = None,
    weights: str | None = None,
) -> torch.Tensor:
    """Chunked prefill: exact attention inside a chunk, the shared state S across chunks.

    `state` (either layout) is continued and updated in place: prefill half, decode the
    rest equals prefill all. `lengths` (B,) marks right-padded rows of mixed length.
    `weights` ("fp32", "bf16", "fp16", "fp64") is the matmul format; state stays fp32.
    """
    return _prefill(Z, V, Q, scale, normalise, chunk, block, state, lengths, weights, False)
