"""The definition of MHLA written as loops, and the naive chunked baseline.

    y_t = scale · Σ_h V_h Σ_{s≤t} z_s (z_sᵀ Q_h z_t)        (÷ t when normalise)

`mhla_reference` is slow and obviously correct; every other form is tested against it
(fp32, relative 1e-5), the way flash-linear-attention keeps `naive.py` beside `chunk.py`.

`naive_chunked` is the straightforward chunked MHLA a user would write by hand, the
baseline `lat bench` measures against: a Python loop over chunks of 64 tokens, one
(d × d_out) state per head, plain torch ops, one head at a time — the textbook chunked
linear attention (query Q_h z, key z, value V_h z) with nothing fused and nothing shared
between heads. `lat bench` reports `speedup_vs_naive_chunked` against it, measured side by
side in the same run. It is exact (tests check it against the loop), just not clever.
"""

from __future__ import annotations

import torch

from lat.runtime.forms.layouts import (
    RecurrentState,
    finish,
    mask_lengths,
    state_dtype,
    weight_dtype,
)


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
    return finish(Y, scale, normalise)


def reference_form(
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
    """`mhla_reference` behind the forms' common signature (`lengths`, `weights`).

    The loop does not continue a state. With `weights`, V and Q are rounded to that
    format and the loop runs in the state format, as the fast forms compute.
    """
    if state is not None:
        raise ValueError("the reference form does not continue a state")
    Z = mask_lengths(Z, lengths)
    if weights is not None:
        w = weight_dtype(weights)
        sd = state_dtype(w)
        return mhla_reference(Z.to(sd), V.to(w).to(sd), Q.to(w).to(sd), scale, normalise)
    return mhla_reference(Z, V, Q, scale, normalise)


def naive_chunked(
    Z: torch.Tensor, V: torch.Tensor, Q: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """y_t = Σ_h V_h Σ_{s≤t} z_s (z_sᵀ Q_h z_t) for Z (B, T, d), V (H, d_out, d), Q (H, d, d)."""
    B, T, d = Z.shape
    H, d_out, _ = V.shape
    Y = torch.zeros(B, T, d_out, dtype=Z.dtype, device=Z.device)
    for h in range(H):
        q = Z @ Q[h].T  # (B, T, d)    queries
        k = Z  # keys are the tokens themselves
        v = Z @ V[h].T  # (B, T, d_out) values
        state = torch.zeros(B, d, d_out, dtype=Z.dtype, device=Z.device)
        for start in range(0, T, chunk):
            qc, kc, vc = (x[:, start : start + chunk] for x in (q, k, v))
            scores = (qc @ kc.transpose(1, 2)).tril()  # causal inside the chunk
            Y[:, start : start + chunk] += scores @ vc + qc @ state
            state = state + kc.transpose(1, 2) @ vc
    return Y


def mhla_masked(
    Z: torch.Tensor, V: torch.Tensor, Q: torch.Tensor, scale: float = 1.0,
    normalise: bool = False, *, last: bool = False,
) -> torch.Tensor:
    """Differentiable MHLA in the dtype of Z, V, Q: outputs (B, T, d_out), or with `last`
    only the last position's (B, d_out).

    All positions: the causal (T × T) score block per head, z_sᵀ Q_h z_t masked to s ≤ t,
    applied to the values V_h z_s — O(B·H·T²) memory. `last`: y_T = Σ_h V_h S Q_h z_T with
    S = Σ_s z_s z_sᵀ, O(B·d²) memory (no score block).
    """
    T = Z.shape[1]
    if last:
        S = torch.einsum("bsj,bsk->bjk", Z, Z)  # Σ_s z_s z_sᵀ
        queries = torch.einsum("hkl,bl->bhk", Q, Z[:, -1])  # Q_h z_T
        y = torch.einsum("hij,bjk,bhk->bi", V, S, queries)
        return finish(y[:, None], scale, normalise, T - 1)[:, 0]
    queries = torch.einsum("hkl,btl->bhtk", Q, Z)  # Q_h z_t
    scores = torch.einsum("bsk,bhtk->bhts", Z, queries)  # z_sᵀ Q_h z_t
    causal = torch.ones(T, T, dtype=torch.bool, device=Z.device).tril()
    scores = scores.masked_fill(~causal, 0.0)
    values = torch.einsum("hij,bsj->bhsi", V, Z)  # V_h z_s
    return finish(torch.einsum("bhts,bhsi->bti", scores, values), scale, normalise)
