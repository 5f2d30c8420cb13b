"""Number formats, the weights rearranged for the fused forms, and the recurrent state.

Shapes: tokens Z (B, T, d); V (H, d_out, d); Q (H, d, d); outputs (B, T, d_out).

Number formats. The state is accumulated in fp32 always (fp64 when the weights are
fp64). Weights may be fp32, bf16 or fp16: prefill matmuls then run in that format with
fp32 accumulation — tokens and the state enter them rounded to the format (exact for
binary tokens; the state is never *stored* rounded, so counts do not saturate over long
sequences); decode steps use the rounded weights in fp32 arithmetic. Whether a
program's decode margin survives the rounding is checked by `execute.rollout`.

The recurrent state comes in two layouts: *shared* S (d×d, resumable by any form) and
*folded* N = Σ_h V_h S Q_h (stored transposed, d×d_out; smaller when d_out < d, and
y = N z needs no per-head work at all).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

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


def weight_dtype(weights: torch.dtype | str) -> torch.dtype:
    """The dtype of a weight format given by name ("bf16") or already as a dtype."""
    if isinstance(weights, torch.dtype):
        return weights
    if weights not in FORMATS:
        raise ValueError(f"unknown weight format '{weights}' (choose from {', '.join(FORMATS)})")
    return FORMATS[weights]


def finish(y: torch.Tensor, scale: float, normalise: bool, start: int = 0) -> torch.Tensor:
    """Apply the artifact's scale and optional 1/t normalisation (t is 1-based)."""
    if scale != 1.0:
        y = y * scale
    if normalise:
        t = torch.arange(start + 1, start + y.shape[1] + 1, dtype=y.dtype, device=y.device)
        y = y / t[None, :, None]
    return y


def mask_lengths(Z: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero every token at or past its row's length: a zero token adds nothing to S.

    Rows are right-padded; `lengths` counts tokens of *this call* per row. Zero tokens
    make every later output of that row 0 and leave its final state exact.
    """
    if lengths is None:
        return Z
    T = Z.shape[1]
    keep = torch.arange(T, device=Z.device)[None, :] < lengths.to(Z.device)[:, None]
    return Z * keep[:, :, None].to(Z.dtype)


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
    compute = weight_dtype(weights) if weights is not None else V.dtype
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


def fold(S: torch.Tensor, p: Prepared) -> torch.Tensor:
    """Shared state S (B, d, d) → folded state Nᵀ = Σ_h Q_hᵀ S V_hᵀ (B, d, d_out)."""
    B = S.shape[0]
    X = torch.matmul(S, p.Vc_s).view(B, p.d, p.H, p.d_out)  # S V_hᵀ for every head
    X = X.permute(0, 2, 1, 3).reshape(B, p.H * p.d, p.d_out)
    return torch.matmul(p.Qt_s, X)  # Σ_h Q_hᵀ (S V_hᵀ)


# --------------------------------------------------------------------------------------
# The recurrent state
# --------------------------------------------------------------------------------------


@dataclass
class RecurrentState:
    """The running sum of the past, in one of two layouts.

    layout "shared": S (B, d, d) = Σ z zᵀ — one state for all heads (docs/ARCHITECTURE.md, "The
    model"); every
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
