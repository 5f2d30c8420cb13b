"""The recurrent form: one token at a time through a `RecurrentState` (decode).

A step adds token z to the state and queries it with z, for all heads at once:
O(H·d·(d + d_out)) per row in either layout (`layouts.RecurrentState`).
"""

from __future__ import annotations

import torch

from lat.runtime.forms.layouts import (
    Prepared,
    RecurrentState,
    format_name,
    mask_lengths,
    prepare,
)


def dense_step(
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
    y = dense_step(p, state.layout, state.tensor, z, z_in)
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
    Z = mask_lengths(Z, lengths)
    outputs = [step_prepared(p, state, Z[:, t], scale, normalise) for t in range(T)]
    if not outputs:
        return Z.new_zeros(B, 0, V.shape[1], dtype=p.state)
    return torch.stack(outputs, dim=1)
