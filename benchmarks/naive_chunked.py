"""The straightforward chunked MHLA a user would write by hand: the benchmark's baseline.

A Python loop over chunks of 64 tokens, one (d × d_out) state per head, plain torch ops,
one head at a time — the textbook chunked linear attention (query Q_h z, key z, value
V_h z) with nothing fused and nothing shared between heads. `lat bench` reports
`speedup_vs_naive_chunked` against this function, measured side by side in the same run.
It is exact (tests check it against the reference loop), just not clever.
"""

from __future__ import annotations

import torch


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
