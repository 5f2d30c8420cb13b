"""MHLA through flash-linear-attention's Triton chunk kernel (the optional `gpu` extra).

Per head, MHLA is ordinary causal linear attention with query Q_h z, key z and value
V_h z (docs/ARCHITECTURE.md, "The model"), which is exactly what
`fla.ops.simple_gla.chunk_simple_gla` computes
with no gate (g=None) and scale 1: o_t^h = Σ_{s≤t} (q_t^h · k_s) v_s^h. Summing o over
heads gives y. `fla_inputs` is that mapping; tests check it on the CPU against fla's own
pure-torch `fla.ops.simple_gla.naive` where fla is installed.

fla keeps one state per head, h^h = Σ k vᵀ = S V_hᵀ (d × d_out); we keep the shared S.
Starting from a shared state is therefore h0^h = S V_hᵀ, and the shared state after the
call is S + Zᵀ Z (one small GEMM). The import is guarded: without fla (or without CUDA)
`fla_available()` is False and `mhla` uses its torch forms.

Precision: Triton runs fp32 dots in TF32 unless told otherwise, so `choose_kernel` only
picks fla for bf16/fp16 weights; kernel="fla" with fp32 accepts TF32 rounding.
"""

from __future__ import annotations

import functools
import inspect

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


@functools.lru_cache(maxsize=1)
def fla_available() -> bool:
    """True when CUDA is up and `fla.ops.simple_gla.chunk_simple_gla` imports."""
    if not torch.cuda.is_available():
        return False
    try:
        from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
    except Exception:  # ImportError, or a Triton/driver mismatch raised at import
        return False
    return True


@functools.lru_cache(maxsize=1)
def _chunk_kernel():
    """fla's chunk kernel and whether it still takes `head_first` (older releases
    defaulted it to True, i.e. [B, H, T, K]; current ones accept only [B, T, H, K])."""
    from fla.ops.simple_gla import chunk_simple_gla

    takes_head_first = "head_first" in inspect.signature(chunk_simple_gla).parameters
    return chunk_simple_gla, takes_head_first


def fla_inputs(
    Z: torch.Tensor, p: Prepared, S: torch.Tensor | None = None
) -> dict[str, torch.Tensor | float | None]:
    """fla's simple-GLA arguments for MHLA over Z (B, T, d), in fla's [B, T, H, ·] layout.

    Per head h: q = Q_h z, k = z, v = V_h z; no gate (g = None, i.e. log-decay 0) and
    scale 1; the initial state h0^h = S V_hᵀ (B, H, d, d_out) from a shared state S
    (B, d, d), or None. Summing fla's output over heads gives MHLA's y.
    """
    B, T, d = Z.shape
    Zc = Z.to(p.compute)
    q = torch.matmul(Zc, p.Qt_c).view(B, T, p.H, d)
    k = Zc[:, :, None, :].expand(B, T, p.H, d).contiguous()
    v = torch.matmul(Zc, p.Vc_c).view(B, T, p.H, p.d_out)
    h0 = None
    if S is not None:
        h0 = torch.matmul(S.float(), p.Vc_s.float())  # S V_hᵀ, all heads
        h0 = h0.view(B, d, p.H, p.d_out).permute(0, 2, 1, 3).contiguous()
    return {"q": q, "k": k, "v": v, "g": None, "scale": 1.0, "initial_state": h0}


def mhla_fla(
    Z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    *,
    state: RecurrentState | None = None,
    lengths: torch.Tensor | None = None,
    weights: str | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """MHLA over Z (B, T, d) on CUDA with fla's chunk kernel; outputs in fp32 (B, T, d_out).

    `cu_seqlens` (N+1,) selects fla's packed variable-length mode (then B must be 1 and
    `state` is not supported). `state` (shared or folded) is continued in place.
    """
    if not fla_available():
        raise RuntimeError("flash-linear-attention is not available (needs CUDA and the "
                           "`gpu` extra: pip install 'lat[gpu]')")
    if Z.device.type != "cuda":
        raise RuntimeError("the fla kernel runs on CUDA tensors only")
    B, T, d = Z.shape
    p: Prepared = prepare(V.to(Z.device), Q.to(Z.device), weights or format_name(Z.dtype))
    start = state.length if state is not None else 0
    if T == 0:
        return torch.zeros(B, 0, p.d_out, dtype=p.state, device=Z.device)
    Z = mask_lengths(Z, lengths)
    S0 = None
    if state is not None and state.layout == "shared":
        if cu_seqlens is not None:
            raise ValueError("packed sequences start from an empty state")
        S0 = state.tensor
    inputs = fla_inputs(Z, p, S0)
    kernel, takes_head_first = _chunk_kernel()
    options = {"head_first": False} if takes_head_first else {}
    if cu_seqlens is not None:
        options["cu_seqlens"] = cu_seqlens.to(device=Z.device, dtype=torch.long)
    o, _ = kernel(**inputs, output_final_state=False, **options)
    Y = o.to(p.state).sum(dim=2)  # Σ_h o^h
    if state is not None:
        Zs = Z.to(p.state)
        if state.layout == "shared":
            state.tensor.add_(torch.bmm(Zs.transpose(1, 2), Zs))
        else:
            Y = Y + torch.bmm(Zs, state.tensor)
            state.tensor.add_(fold(torch.bmm(Zs.transpose(1, 2), Zs), p))
        state.length += T
    return finish(Y, scale, normalise, start)
