"""The packed form: variable-length sequences concatenated along one token axis.

Z (total, d) holds sequence i at cu_seqlens[i]:cu_seqlens[i+1], as flash-linear-attention
takes them. Sequences are gathered into a zero-padded batch (exact: zero tokens are
invisible) and scattered back; the fla kernel takes the offsets directly.
"""

from __future__ import annotations

import torch

from lat.runtime.forms.dispatch import mhla, use_fla
from lat.runtime.forms.fla import mhla_fla


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
    if kernel == "fla" or (kernel == "auto" and use_fla(T, Z.device, weights or Z.dtype)):
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
