"""Multi-head linear attention (MHLA) in its several computational forms.

    y_t = scale · Σ_h V_h Σ_{s≤t} z_s (z_sᵀ Q_h z_t)        (÷ t when normalise)

Shapes: tokens Z (B, T, d); V (H, d_out, d); Q (H, d, d); outputs (B, T, d_out).

`mhla_reference` is the definition written as loops: slow and obviously correct. Every
other form is tested against it (fp32, relative 1e-5):

- `mhla_parallel`   one masked (T×T) attention block: O(T²), best for short T;
- `mhla_chunked`    chunks of C tokens with the shared state carried between them (prefill);
- `mhla_recurrent`  one token at a time through `RecurrentState` (decode);
- `mhla_fla`        flash-linear-attention's Triton chunk kernel (CUDA, where installed).

Why the fast forms are fast (DESIGN §1). Every head attends with the *same* keys and
values — the raw tokens — so one state S_t = Σ_{s≤t} z_s z_sᵀ (d×d) serves all H heads,
where a textbook per-head kernel keeps H states of d×d_out and updates each. The chunked
form therefore computes, per chunk of C tokens and for all heads at once,

    u_t^h = S_prev (Q_h z_t) + Σ_{s in chunk, s≤t} z_s (z_sᵀ Q_h z_t)      (d-vectors)
    y_t   = Σ_h V_h u_t^h  =  [u_t^1 … u_t^H] · Wᵀ                          (one GEMM)

with the queries of all heads in one fused projection, the value maps applied once after
the attention (a GEMM with inner dimension H·d, not d), one d×d state update per chunk
instead of H, and small chunks (the inter-chunk work no longer grows with C, so the
quadratic intra-chunk part is kept short). Work is tiled over blocks of a few hundred
tokens so that every intermediate stays in cache.

The recurrent state comes in two layouts: *shared* S (d×d, resumable by any form) and
*folded* N = Σ_h V_h S Q_h (stored transposed, d×d_out; smaller when d_out < d, and
y = N z needs no per-head work at all). `TokenDecoder` runs the folded layout on binary
tokens given by their nonzero coordinates — the tokens one-hot Interface fields build —
so that a decode step touches only the state rows those coordinates name.

Number formats. The state is accumulated in fp32 always (fp64 when the weights are
fp64). Weights may be fp32, bf16 or fp16: prefill matmuls then run in that format with
fp32 accumulation — tokens and the state enter them rounded to the format (exact for
binary tokens; the state is never *stored* rounded, so counts do not saturate over long
sequences); decode steps use the rounded weights in fp32 arithmetic. Whether a
program's decode margin survives the rounding is checked by `execute.rollout`.

On a multi-core CPU the chunked form runs row groups in worker threads, one thread per
op (`_chunked_rows`): its ops are small, and OpenMP's barrier per op is what collapses
when a core is shared.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

KERNELS = ("auto", "reference", "parallel", "chunked", "recurrent", "fla")
FORMATS: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
LAYOUTS = ("shared", "folded")


def format_name(dtype: torch.dtype) -> str:
    """The short name ("fp32", "bf16", ...) of a floating dtype."""
    for name, candidate in FORMATS.items():
        if candidate == dtype:
            return name
    raise ValueError(f"unsupported number format {dtype}")


def state_dtype(weights: torch.dtype) -> torch.dtype:
    """The accumulation format for weights of this format: fp64 stays fp64, else fp32."""
    return torch.float64 if weights == torch.float64 else torch.float32


def _finish(y: torch.Tensor, scale: float, normalise: bool, start: int = 0) -> torch.Tensor:
    """Apply the artifact's scale and optional 1/t normalisation (t is 1-based)."""
    if scale != 1.0:
        y = y * scale
    if normalise:
        t = torch.arange(start + 1, start + y.shape[1] + 1, dtype=y.dtype, device=y.device)
        y = y / t[None, :, None]
    return y


# --------------------------------------------------------------------------------------
# The definition
# --------------------------------------------------------------------------------------


def mhla_reference(
    Z: torch.Tensor, V: torch.Tensor, Q: torch.Tensor, scale: float = 1.0, normalise: bool = False
) -> torch.Tensor:
    """The definition, term by term: loops over positions t, keys s ≤ t and heads h."""
    B, T, _ = Z.shape
    H, d_out, _ = V.shape
    Y = torch.zeros(B, T, d_out, dtype=Z.dtype, device=Z.device)
    for t in range(T):
        for h in range(H):
            query = Z[:, t] @ Q[h].T  # (B, d): Q_h z_t
            for s in range(t + 1):
                score = (Z[:, s] * query).sum(-1, keepdim=True)  # z_sᵀ Q_h z_t
                Y[:, t] += score * (Z[:, s] @ V[h].T)  # V_h z_s
    return _finish(Y, scale, normalise)


# --------------------------------------------------------------------------------------
# Weights in the layouts the fast forms use
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """V and Q rearranged once for the fused forms (cached per tensor version).

    `*_c` tensors are in the compute (weight) format, `*_s` in the state format and hold
    the *same rounded values*, so every form computes with identical weights.
    """

    H: int
    d: int
    d_out: int
    compute: torch.dtype
    state: torch.dtype
    Qt_c: torch.Tensor  # (d, H·d): z @ Qt = [Q_1 z, …, Q_H z]
    Wt_c: torch.Tensor  # (H·d, d_out): [u_1 … u_H] @ Wt = Σ_h V_h u_h
    Vc_c: torch.Tensor  # (d, H·d_out): z @ Vc = [V_1 z, …, V_H z]
    Qt_s: torch.Tensor
    Wt_s: torch.Tensor
    Vc_s: torch.Tensor
    Qr_s: torch.Tensor  # (d, H·d): z @ Qr = [Q_1ᵀ z, …, Q_Hᵀ z]
    fold_s: torch.Tensor  # (d, H·(d + d_out)): z @ fold = [Q_hᵀ z]_h ‖ [V_h z]_h
    nonnegative: bool  # V ≥ 0 and Q ≥ 0: outputs of non-negative tokens cannot cancel


_PREPARED: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor, Prepared]] = OrderedDict()
_PREPARED_SIZE = 16


def prepare(
    V: torch.Tensor, Q: torch.Tensor, weights: torch.dtype | str | None = None
) -> Prepared:
    """Rearrange (and round to the weight format) V and Q; cached by tensor identity.

    The cache keeps references to V and Q, so a key (id, version) cannot be reused by a
    different tensor while its entry lives.
    """
    compute = _dtype(weights) if weights is not None else V.dtype
    # Inference tensors keep no version counter: they are prepared afresh, not cached.
    cacheable = not (V.is_inference() or Q.is_inference())
    key = (id(V), V._version, id(Q), Q._version, compute, V.device) if cacheable else None
    hit = _PREPARED.get(key) if cacheable else None
    if hit is not None:
        _PREPARED.move_to_end(key)
        return hit[2]
    H, d_out, d = V.shape
    sd = state_dtype(compute)
    Vq, Qq = V.detach().to(compute), Q.detach().to(compute)  # the rounded weights
    Qt = Qq.transpose(1, 2).permute(1, 0, 2).reshape(d, H * d)  # block h = Q_hᵀ
    Wt = Vq.transpose(1, 2).reshape(H * d, d_out)  # block h = V_hᵀ (rows)
    Vc = Vq.transpose(1, 2).permute(1, 0, 2).reshape(d, H * d_out)  # block h = V_hᵀ (cols)
    Qr = Qq.permute(1, 0, 2).reshape(d, H * d)  # block h = Q_h
    prepared = Prepared(
        H=H, d=d, d_out=d_out, compute=compute, state=sd,
        Qt_c=Qt.contiguous(), Wt_c=Wt.contiguous(), Vc_c=Vc.contiguous(),
        Qt_s=Qt.to(sd).contiguous(), Wt_s=Wt.to(sd).contiguous(), Vc_s=Vc.to(sd).contiguous(),
        Qr_s=Qr.to(sd).contiguous(),
        fold_s=torch.cat([Qr, Vc], dim=1).to(sd).contiguous(),
        nonnegative=bool((V >= 0).all() and (Q >= 0).all()),
    )
    if cacheable:
        _PREPARED[key] = (V, Q, prepared)
        while len(_PREPARED) > _PREPARED_SIZE:
            _PREPARED.popitem(last=False)
    return prepared


def _dtype(weights: torch.dtype | str) -> torch.dtype:
    if isinstance(weights, torch.dtype):
        return weights
    if weights not in FORMATS:
        raise ValueError(f"unknown weight format '{weights}' (choose from {', '.join(FORMATS)})")
    return FORMATS[weights]


def fold(S: torch.Tensor, p: Prepared) -> torch.Tensor:
    """Shared state S (B, d, d) → folded state Nᵀ = Σ_h Q_hᵀ S V_hᵀ (B, d, d_out)."""
    B = S.shape[0]
    X = torch.matmul(S, p.Vc_s).view(B, p.d, p.H, p.d_out)  # S V_hᵀ for every head
    X = X.permute(0, 2, 1, 3).reshape(B, p.H * p.d, p.d_out)
    return torch.matmul(p.Qt_s, X)  # Σ_h Q_hᵀ (S V_hᵀ)


# --------------------------------------------------------------------------------------
# Recurrent state and the dense decode step
# --------------------------------------------------------------------------------------


@dataclass
class RecurrentState:
    """The running sum of the past, in one of two layouts.

    layout "shared": S (B, d, d) = Σ z zᵀ — one state for all heads (DESIGN §1); every
    form can continue from it. layout "folded": Nᵀ (B, d, d_out) = Σ_h Q_hᵀ S V_hᵀ — the
    heads summed into the state, so y = Nz; smaller when d_out < d, decode-only.
    `length` counts tokens seen (for normalise).
    """

    layout: str
    tensor: torch.Tensor
    length: int = 0

    @staticmethod
    def empty(
        batch: int,
        V: torch.Tensor,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        layout: str | None = None,
    ) -> RecurrentState:
        """A zero state; the layout defaults to the smaller one (folded iff d_out < d)."""
        H, d_out, d = V.shape
        layout = layout or ("folded" if d_out < d else "shared")
        if layout == "shared":
            return RecurrentState("shared", torch.zeros(batch, d, d, dtype=dtype, device=device))
        if layout == "folded":
            return RecurrentState(
                "folded", torch.zeros(batch, d, d_out, dtype=dtype, device=device)
            )
        raise ValueError(f"unknown state layout '{layout}' (choose from {', '.join(LAYOUTS)})")

    def folded(self, V: torch.Tensor, Q: torch.Tensor, weights: str | None = None
               ) -> RecurrentState:
        """This state in the folded layout (a copy; shared → folded is one-way)."""
        if self.layout == "folded":
            return RecurrentState("folded", self.tensor.clone(), self.length)
        p = prepare(V, Q, weights or format_name(self.tensor.dtype))
        return RecurrentState("folded", fold(self.tensor.to(p.state), p), self.length)


def _dense_step(
    p: Prepared, layout: str, M: torch.Tensor, z: torch.Tensor, z_in: torch.Tensor
) -> torch.Tensor:
    """One decode step on state tensor M (in place): add token z_in, query with z.

    Batch 1 takes 2-D ops (mm/addmm/addr): batched kernels carry a parallel-for whose
    cost dwarfs a 64×64 product.
    """
    B = z.shape[0]
    H, d, d_out = p.H, p.d, p.d_out
    if layout == "shared":
        if B == 1:
            M[0].addr_(z_in[0], z_in[0])  # S += z zᵀ
            q = torch.mm(z, p.Qt_s).view(H, d)  # Q_h z, all heads
            u = torch.mm(q, M[0])  # (S Q_h z)ᵀ (S symmetric)
            return torch.mm(u.view(1, H * d), p.Wt_s)
        M.baddbmm_(z_in[:, :, None], z_in[:, None, :])
        q = torch.mm(z, p.Qt_s).view(B, H, d)
        u = torch.bmm(q, M)
        return torch.mm(u.view(B, H * d), p.Wt_s)
    av = torch.mm(z_in, p.fold_s)  # [Q_hᵀ z]_h ‖ [V_h z]_h
    if B == 1:
        a = av[0, : H * d].view(H, d)
        v = av[0, H * d :].view(H, d_out)
        M[0].addmm_(a.t(), v)  # Nᵀ += Σ_h (Q_hᵀ z)(V_h z)ᵀ
        return torch.mm(z, M[0])
    a = av[:, : H * d].view(B, H, d)
    v = av[:, H * d :].view(B, H, d_out)
    M.baddbmm_(a.transpose(1, 2), v)
    return torch.bmm(z[:, None, :], M).view(B, d_out)


def recurrent_step(
    state: RecurrentState,
    z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    active: torch.Tensor | None = None,
    *,
    weights: str | None = None,
) -> torch.Tensor:
    """Add token z (B, d) to the state in place and return its output (B, d_out).

    Rows where `active` is False leave their state untouched (finished sequences); their
    output is still computed (from the state as it stands). O(H·d·(d + d_out)) per row.
    """
    p = prepare(V, Q, weights or format_name(state.tensor.dtype))
    return step_prepared(p, state, z, scale, normalise, active)


def step_prepared(
    p: Prepared,
    state: RecurrentState,
    z: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """`recurrent_step` with the weights already prepared (decode loops)."""
    z = z.to(p.state)
    z_in = z if active is None else z * active[:, None].to(z.dtype)
    y = _dense_step(p, state.layout, state.tensor, z, z_in)
    state.length += 1
    if scale != 1.0:
        y = y * scale
    if normalise:
        y = y / state.length
    return y


def mhla_recurrent(
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
    """Token-by-token form through `recurrent_step` (continues `state` when given)."""
    B, T, _ = Z.shape
    p = prepare(V, Q, weights or format_name(Z.dtype))
    if state is None:
        state = RecurrentState.empty(B, V, p.state, Z.device)
    Z = _mask_lengths(Z, lengths)
    outputs = [step_prepared(p, state, Z[:, t], scale, normalise) for t in range(T)]
    if not outputs:
        return Z.new_zeros(B, 0, V.shape[1], dtype=p.state)
    return torch.stack(outputs, dim=1)


# --------------------------------------------------------------------------------------
# Parallel and chunked prefill
# --------------------------------------------------------------------------------------

_MASKS: dict[tuple, torch.Tensor] = {}


def _causal_mask(C: int, H: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(C·H, C) with entry [(t, h), s] = 1 if s ≤ t: the causal mask of a chunk's scores."""
    key = (C, H, dtype, device)
    if key not in _MASKS:
        tril = torch.ones(C, C, dtype=dtype, device=device).tril()
        _MASKS[key] = tril[:, None, :].expand(C, H, C).reshape(C * H, C).contiguous()
    return _MASKS[key]


def _mask_lengths(Z: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero every token at or past its row's length: a zero token adds nothing to S.

    Rows are right-padded; `lengths` counts tokens of *this call* per row. Zero tokens
    make every later output of that row 0 and leave its final state exact.
    """
    if lengths is None:
        return Z
    T = Z.shape[1]
    keep = torch.arange(T, device=Z.device)[None, :] < lengths.to(Z.device)[:, None]
    return Z * keep[:, :, None].to(Z.dtype)


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
    Z = _mask_lengths(Z, lengths)
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
    return _finish(Y, scale, normalise, start)


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


def mhla_packed(
    Z: torch.Tensor,
    cu_seqlens: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    kernel: str = "auto",
    *,
    weights: str | None = None,
) -> torch.Tensor:
    """Packed sequences: Z (total, d) holds sequence i at cu_seqlens[i]:cu_seqlens[i+1].

    Returns (total, d_out). Sequences are gathered into a zero-padded batch (exact: zero
    tokens are invisible) and scattered back; the fla kernel takes the offsets directly.
    """
    offsets = [int(x) for x in cu_seqlens.tolist()]
    lengths = [b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    if not lengths:
        return Z.new_zeros(0, V.shape[1])
    T = max(lengths)
    if kernel == "fla" or (kernel == "auto" and _use_fla(T, Z.device, weights or Z.dtype)):
        from lat.runtime.fla_kernels import mhla_fla

        return mhla_fla(Z[None], V, Q, scale, normalise, weights=weights,
                        cu_seqlens=cu_seqlens)[0]
    B = len(lengths)
    index = torch.cat([torch.arange(a, b, device=Z.device) for a, b in
                       zip(offsets[:-1], offsets[1:], strict=True)])
    rows = torch.repeat_interleave(torch.arange(B, device=Z.device),
                                   torch.tensor(lengths, device=Z.device))
    cols = index - torch.tensor(offsets[:-1], device=Z.device)[rows]
    padded = Z.new_zeros(B, T, Z.shape[1])
    padded[rows, cols] = Z[index]
    Y = mhla(padded, V, Q, scale, normalise, kernel, weights=weights)
    return Y[rows, cols]


# --------------------------------------------------------------------------------------
# Choosing a form
# --------------------------------------------------------------------------------------


def _use_fla(T: int, device: torch.device | str, weights: torch.dtype | str) -> bool:
    """fla's Triton kernels: CUDA, installed, and a 16-bit format (in fp32 Triton's dots
    run in TF32, which would break the 1e-5 agreement; ask for kernel="fla" to accept)."""
    if torch.device(device).type != "cuda" or T < 64:
        return False
    if _dtype(weights) not in (torch.bfloat16, torch.float16):
        return False
    from lat.runtime.fla_kernels import fla_available

    return fla_available()


def choose_kernel(
    T: int, device: torch.device | str = "cpu", weights: torch.dtype | str = torch.float32
) -> str:
    """The fastest exact form for a sequence length and device.

    CPU: parallel up to one chunk's worth of tokens, chunked beyond. CUDA: fla for
    16-bit weights when installed, else the same torch forms (parallel up to 64).
    """
    if _use_fla(T, device, weights):
        return "fla"
    limit = 64 if torch.device(device).type == "cuda" else 16
    return "chunked" if limit < T else "parallel"


def mhla(
    Z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    kernel: str = "auto",
    *,
    state: RecurrentState | None = None,
    lengths: torch.Tensor | None = None,
    weights: str | None = None,
) -> torch.Tensor:
    """Run MHLA over whole sequences with the chosen (or automatically picked) form.

    `state` continues a previous call and is updated in place (any form but reference);
    `lengths` marks right-padded rows; `weights` selects the matmul format.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel '{kernel}' (choose from {', '.join(KERNELS)})")
    if kernel == "auto":
        kernel = choose_kernel(Z.shape[1], Z.device, weights or Z.dtype)
    if kernel == "reference":
        if state is not None:
            raise ValueError("the reference form does not continue a state")
        Z = _mask_lengths(Z, lengths)
        if weights is not None:
            w = _dtype(weights)
            sd = state_dtype(w)
            return mhla_reference(Z.to(sd), V.to(w).to(sd), Q.to(w).to(sd), scale, normalise)
        return mhla_reference(Z, V, Q, scale, normalise)
    options = {"state": state, "lengths": lengths, "weights": weights}
    if kernel == "parallel":
        return mhla_parallel(Z, V, Q, scale, normalise, **options)
    if kernel == "chunked":
        return mhla_chunked(Z, V, Q, scale, normalise, **options)
    if kernel == "recurrent":
        return mhla_recurrent(Z, V, Q, scale, normalise, **options)
    from lat.runtime.fla_kernels import mhla_fla

    return mhla_fla(Z, V, Q, scale, normalise, **options)


# --------------------------------------------------------------------------------------
# Decoding binary tokens by their coordinates
# --------------------------------------------------------------------------------------


class TokenDecoder:
    """Batched recurrent decode for binary tokens given by their nonzero coordinates.

    Every artifact's tokens are sums of unit vectors (one per token field), so a token
    is a row of coordinates `coords` (B, F); coordinate d means "nothing" (padding, or a
    finished row). The state is folded, Nᵀ = Σ_h Q_hᵀ S V_hᵀ (B, d+1, d_out) with a
    spare zero row d, and a step is

        update  Nᵀ += Σ_h (Q_hᵀ z)(V_h z)ᵀ     — only the rows where some Q_hᵀ z ≠ 0
        output  y   = Σ_f Nᵀ[c_f]              — F row reads

    so with sparse Q (Q = I for every compiled automaton) a step costs O(F·K·d_out) per
    row, K the nonzeros per row of Q; with dense Q the update is one batched rank-H
    product, O(H·d·d_out). No per-row Python work either way.

    The weights are rounded to `weights` and used in the state format (fp32, or fp64).

    `signed=True` also takes negative unit vectors: code d+1+c is −e_c (code 2d+1 is
    "nothing" again), as machines' sum-of-deltas tokens need. The tables get negated
    copies, and each read row is weighted by its sign.
    """

    def __init__(
        self,
        V: torch.Tensor,
        Q: torch.Tensor,
        batch: int,
        *,
        weights: str = "fp32",
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        scale: float = 1.0,
        normalise: bool = False,
        signed: bool = False,
    ) -> None:
        w = _dtype(weights)
        sd = dtype or state_dtype(w)
        H, d_out, d = V.shape
        self.H, self.d, self.d_out, self.batch = H, d, d_out, batch
        self.scale, self.normalise, self.length = scale, normalise, 0
        self.device = torch.device(device)
        Vr = V.detach().to(w).to(sd).to(self.device)  # rounded to the format, used in sd
        Qr = Q.detach().to(w).to(sd).to(self.device)
        zero_row = torch.zeros(1, H, dtype=sd, device=self.device)
        # value table: row c = [V_h e_c]_h (H·d_out); row d = 0
        self.values = torch.cat(
            [Vr.permute(2, 0, 1).reshape(d, H * d_out), zero_row.new_zeros(1, H * d_out)]
        ).contiguous()
        # Q rows: row c, head h = Q_hᵀ e_c = Q_h[c, :]
        q_rows = torch.cat([Qr.permute(1, 0, 2), zero_row.new_zeros(1, H, d)])  # (d+1, H, d)
        nonzero = q_rows != 0
        K = int(nonzero.sum(dim=(1, 2)).max()) if d else 0
        self.unit = bool(
            H == 1 and K <= 1 and torch.equal(q_rows[:d, 0], torch.eye(d, dtype=sd,
                                                                        device=self.device))
        )  # Q = I: the update row is the token's own coordinate
        self.sparse = H * d >= 4 * K  # few rows per update: index, don't multiply
        if self.sparse and not self.unit:
            K = max(K, 1)
            k_index = torch.full((d + 1, K), d, dtype=torch.long, device=self.device)
            h_index = torch.zeros(d + 1, K, dtype=torch.long, device=self.device)
            coef = torch.zeros(d + 1, K, dtype=sd, device=self.device)
            for c in range(d):
                heads, cols = torch.nonzero(nonzero[c], as_tuple=True)
                n = heads.numel()
                k_index[c, :n], h_index[c, :n] = cols, heads
                coef[c, :n] = q_rows[c, heads, cols]
            self.k_index, self.h_index, self.coef = k_index, h_index, coef
        self.q_rows = q_rows.reshape(d + 1, H * d).contiguous()
        self.signed = signed
        if signed:  # codes d+1 … 2d+1: the same rows negated
            self.values = torch.cat([self.values, -self.values]).contiguous()
            self.q_rows = torch.cat([self.q_rows, -self.q_rows]).contiguous()
            if self.sparse and not self.unit:
                self.k_index = torch.cat([self.k_index, self.k_index])
                self.h_index = torch.cat([self.h_index, self.h_index])
                self.coef = torch.cat([self.coef, -self.coef])
        self.base = torch.arange(batch, device=self.device) * (d + 1)
        self.state = torch.zeros(batch, d + 1, d_out, dtype=sd, device=self.device)

    @property
    def flat(self) -> torch.Tensor:
        return self.state.view(self.batch * (self.d + 1), self.d_out)

    def load_shared(self, S: torch.Tensor, length: int, V: torch.Tensor, Q: torch.Tensor,
                    weights: str) -> None:
        """Start from a prefill's shared state S (B, d, d)."""
        p = prepare(V.to(self.device), Q.to(self.device), weights)
        self.state[:, : self.d] = fold(S.to(p.state), p).to(self.state.dtype)
        self.length = length

    def step(self, coords: torch.Tensor, update: torch.Tensor | None = None) -> torch.Tensor:
        """Add the tokens `update` (default: `coords`) and return outputs for `coords`.

        coords, update: (B, F) long, values in [0, d]; rows of `update` set to d skip
        the state update (finished sequences).
        """
        if update is None:
            update = coords
        B, F = coords.shape
        H, d, d_out = self.H, self.d, self.d_out
        flat = self.flat
        if F == 1:
            v = self.values.index_select(0, update[:, 0])  # (B, H·d_out)
        else:
            v = self.values.index_select(0, update.reshape(-1)).view(B, F, -1).sum(1)
        if self.unit:
            if self.signed:  # row c of a code ±e_c gets ±(V z)
                negative = update > d
                rows = (self.base[:, None] + torch.where(negative, update - (d + 1), update))
                sign = 1.0 - 2.0 * negative.to(v.dtype)
                flat.index_add_(0, rows.view(-1), (sign[:, :, None] * v[:, None, :]).view(
                    B * F, -1))
            else:
                rows = (self.base[:, None] + update).view(-1)
                flat.index_add_(0, rows, v.repeat_interleave(F, dim=0) if F > 1 else v)
            if F > 1:  # a padding coordinate beside real ones must not fill the spare row
                self.state[:, d].zero_()
        elif self.sparse:
            K = self.k_index.shape[1]
            k = self.k_index.index_select(0, update.reshape(-1)).view(B, F * K)
            c = self.coef.index_select(0, update.reshape(-1)).view(B, F * K, 1)
            if H == 1:
                contribution = c * v[:, None, :]
            else:
                h = self.h_index.index_select(0, update.reshape(-1)).view(B, F * K, 1)
                contribution = c * v.view(B, H, d_out).gather(1, h.expand(B, F * K, d_out))
            flat.index_add_(0, (self.base[:, None] + k).view(-1),
                            contribution.view(B * F * K, d_out))
        else:
            a = self.q_rows.index_select(0, update.reshape(-1)).view(B, F, H, d).sum(1)
            self.state[:, :d].baddbmm_(a.transpose(1, 2), v.view(B, H, d_out))
        if self.signed:
            negative = coords > d
            rows = (self.base[:, None] + torch.where(negative, coords - (d + 1), coords))
            y = flat.index_select(0, rows.view(-1)).view(B, F, d_out)
            y = (y * (1.0 - 2.0 * negative.to(y.dtype))[:, :, None]).sum(1)
        else:
            rows = (self.base[:, None] + coords).view(-1)
            y = flat.index_select(0, rows)
            if F > 1:
                y = y.view(B, F, d_out).sum(1)
        self.length += 1
        if self.scale != 1.0:
            y = y * self.scale
        if self.normalise:
            y = y / self.length
        return y
