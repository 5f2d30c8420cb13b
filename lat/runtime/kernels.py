"""Multi-head linear attention (MHLA) in its several computational forms.

    y_t = scale · Σ_h V_h Σ_{s≤t} z_s (z_sᵀ Q_h z_t)        (÷ t when normalise)

Shapes: tokens Z (B, T, d); V (H, d_out, d); Q (H, d, d); outputs (B, T, d_out).

`mhla_reference` is the definition written as loops: slow and obviously correct. Every
other form is tested against it:
- `mhla_parallel`   masked attention matrix per head, O(T²); best for short T;
- `mhla_chunked`    chunks of C tokens, state carried between chunks (prefill);
- `mhla_recurrent`  one token at a time through `RecurrentState` (decode / rollout).

The recurrent state comes in two equivalent layouts, chosen by size: the *shared* state
S_t = Σ z_s z_sᵀ (d×d, one for all heads — DESIGN §1) or the per-head *value–key* state
M_h = Σ (V_h z_s) z_sᵀ (d_out×d per head), which is smaller when H·d_out < d.
State is always kept in fp32 (or fp64 when the weights are fp64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KERNELS = ("auto", "reference", "parallel", "chunked", "recurrent")


def _finish(y: torch.Tensor, scale: float, normalise: bool, start: int = 0) -> torch.Tensor:
    """Apply the artifact's scale and optional 1/t normalisation (t is 1-based)."""
    if scale != 1.0:
        y = y * scale
    if normalise:
        t = torch.arange(start + 1, start + y.shape[1] + 1, dtype=y.dtype, device=y.device)
        y = y / t[None, :, None]
    return y


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


def mhla_parallel(
    Z: torch.Tensor, V: torch.Tensor, Q: torch.Tensor, scale: float = 1.0, normalise: bool = False
) -> torch.Tensor:
    """Masked form: one causal (T×T) score matrix z_sᵀ Q_h z_t per head."""
    T = Z.shape[1]
    queries = torch.einsum("hkl,btl->bhtk", Q, Z)  # Q_h z_t
    scores = torch.einsum("bsk,bhtk->bhts", Z, queries)  # z_sᵀ Q_h z_t
    mask = torch.ones(T, T, dtype=torch.bool, device=Z.device).tril()
    scores = scores.masked_fill(~mask, 0.0)
    values = torch.einsum("hij,bsj->bhsi", V, Z)  # V_h z_s
    Y = torch.einsum("bhts,bhsi->bti", scores, values)
    return _finish(Y, scale, normalise)


def mhla_chunked(
    Z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    chunk: int = 64,
) -> torch.Tensor:
    """Chunked prefill: exact attention inside a chunk, the shared state S across chunks."""
    B, T, d = Z.shape
    S = torch.zeros(B, d, d, dtype=Z.dtype, device=Z.device)
    pieces = []
    for start in range(0, T, chunk):
        block = Z[:, start : start + chunk]
        inside = mhla_parallel(block, V, Q)
        queries = torch.einsum("hkl,btl->bhtk", Q, block)
        carried = torch.einsum("hij,bjk,bhtk->bti", V, S, queries)  # V_h S Q_h z_t
        pieces.append(inside + carried)
        S = S + block.transpose(1, 2) @ block
    Y = torch.cat(pieces, dim=1) if pieces else Z.new_zeros(B, 0, V.shape[1])
    return _finish(Y, scale, normalise)


@dataclass
class RecurrentState:
    """The running sum of the past, in the smaller of its two layouts.

    layout "shared": S (B, d, d) = Σ z zᵀ;   layout "value_key": M (B, H, d_out, d).
    `length` counts tokens seen (for normalise).
    """

    layout: str
    tensor: torch.Tensor
    length: int = 0

    @staticmethod
    def empty(
        batch: int, V: torch.Tensor, dtype: torch.dtype, device: torch.device | str = "cpu"
    ) -> RecurrentState:
        H, d_out, d = V.shape
        if H * d_out < d:
            return RecurrentState("value_key", torch.zeros(batch, H, d_out, d, dtype=dtype,
                                                           device=device))
        return RecurrentState("shared", torch.zeros(batch, d, d, dtype=dtype, device=device))


def recurrent_step(
    state: RecurrentState,
    z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """Add token z (B, d) to the state in place and return its output (B, d_out).

    Rows where `active` is False leave their state untouched (finished sequences).
    """
    z_in = z if active is None else z * active[:, None].to(z.dtype)
    queries = torch.einsum("hkl,bl->bhk", Q, z)  # Q_h z
    # Rank-one updates in place (baddbmm): no (B, ·, d) temporary per step.
    if state.layout == "shared":
        state.tensor.baddbmm_(z_in[:, :, None], z_in[:, None, :])
        y = torch.einsum("hij,bjk,bhk->bi", V, state.tensor, queries)
    else:
        B, H, d_out, d = state.tensor.shape
        values = torch.einsum("hij,bj->bhi", V, z_in).reshape(B, H * d_out, 1)
        state.tensor.view(B, H * d_out, d).baddbmm_(values, z_in[:, None, :])
        y = torch.einsum("bhik,bhk->bi", state.tensor, queries)
    state.length += 1
    if scale != 1.0:
        y = y * scale
    if normalise:
        y = y / state.length
    return y


def mhla_recurrent(
    Z: torch.Tensor, V: torch.Tensor, Q: torch.Tensor, scale: float = 1.0, normalise: bool = False
) -> torch.Tensor:
    """Token-by-token form through `recurrent_step`."""
    B, T, _ = Z.shape
    state = RecurrentState.empty(B, V, Z.dtype, Z.device)
    outputs = [recurrent_step(state, Z[:, t], V, Q, scale, normalise) for t in range(T)]
    return torch.stack(outputs, dim=1) if outputs else Z.new_zeros(B, 0, V.shape[1])


def choose_kernel(T: int, device: torch.device | str = "cpu") -> str:
    """The fastest exact form for a sequence length: parallel when short, else chunked."""
    return "parallel" if T <= 128 else "chunked"


def mhla(
    Z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    kernel: str = "auto",
) -> torch.Tensor:
    """Run MHLA over whole sequences with the chosen (or automatically picked) form."""
    if kernel == "auto":
        kernel = choose_kernel(Z.shape[1], Z.device)
    forms = {
        "reference": mhla_reference,
        "parallel": mhla_parallel,
        "chunked": mhla_chunked,
        "recurrent": mhla_recurrent,
    }
    if kernel not in forms:
        raise ValueError(f"unknown kernel '{kernel}' (choose from {', '.join(KERNELS)})")
    return forms[kernel](Z, V, Q, scale, normalise)
