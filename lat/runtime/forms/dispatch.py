"""Choosing a form: the {name: function} registry, `choose_kernel` and `mhla`.

Every form in `FORMS` takes (Z, V, Q, scale, normalise, *, state, lengths, weights) and
returns (B, T, d_out); `mhla` looks the name up (or picks one for "auto").
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lat.runtime.forms.chunked import mhla_chunked, mhla_parallel
from lat.runtime.forms.fla import fla_available, mhla_fla
from lat.runtime.forms.layouts import RecurrentState, weight_dtype
from lat.runtime.forms.recurrent import mhla_recurrent
from lat.runtime.forms.reference import reference_form
from lat.runtime.forms.sparse import mhla_sparse

FORMS: dict[str, Callable[..., torch.Tensor]] = {
    "reference": reference_form,
    "parallel": mhla_parallel,
    "chunked": mhla_chunked,
    "recurrent": mhla_recurrent,
    "fla": mhla_fla,
    "sparse": mhla_sparse,
}
KERNELS = ("auto", *FORMS)


def use_fla(T: int, device: torch.device | str, weights: torch.dtype | str) -> bool:
    """fla's Triton kernels: CUDA, installed, and a 16-bit format (in fp32 Triton's dots
    run in TF32, which would break the 1e-5 agreement; ask for kernel="fla" to accept)."""
    if torch.device(device).type != "cuda" or T < 64:
        return False
    if weight_dtype(weights) not in (torch.bfloat16, torch.float16):
        return False
    return fla_available()


def choose_kernel(
    T: int, device: torch.device | str = "cpu", weights: torch.dtype | str = torch.float32
) -> str:
    """The fastest exact form for a sequence length and device.

    CPU: parallel up to one chunk's worth of tokens, chunked beyond. CUDA: fla for
    16-bit weights when installed, else the same torch forms (parallel up to 64).
    """
    if use_fla(T, device, weights):
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
    form = FORMS[kernel]
    return form(Z, V, Q, scale, normalise, state=state, lengths=lengths, weights=weights)
