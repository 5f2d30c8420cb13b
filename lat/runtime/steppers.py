"""Steppers: how a rollout advances its state one token at a time, and prefills.

`SparseStepper` (the default: binary or ±unit tokens through the coordinate decoder),
`SparseWeightsStepper` (big sparse tables: the sparse decoder, never densified),
`DenseStepper` (dense recurrent steps) and `ReferenceStepper` (the loop definition over
the whole history) share `prefill_pays`/`step`/`prefill`; `execute.rollout` picks one.
"""

from __future__ import annotations

import torch

from lat.runtime.forms import (
    FORMATS,
    RecurrentState,
    TokenDecoder,
    mhla,
    mhla_reference,
    prepare,
    step_prepared,
)
from lat.runtime.forms.sparse import SparseDecoder
from lat.runtime.model import CompiledModel
from lat.runtime.tokens import Tokens

# Cost model of the coordinate decoder's prefill choice (flop-equivalents, measured on the
# 2-core CPU): a scattered index op costs ~8 matmul flops; one Python step ~2e5 flops.
INDEX_PENALTY = 8
STEP_OVERHEAD = 200_000


# --------------------------------------------------------------------------------------
# Steppers: sparse (default), dense recurrent, reference
# --------------------------------------------------------------------------------------


class SparseStepper:
    """The coordinate decoder (binary tokens, or ±unit tokens with `signed`).

    `absolute` feeds |z| (for the rounding bound E) and is for binary tokens only, where
    |z| = z; the bound of signed tokens runs on the dense stepper."""

    def __init__(self, V: torch.Tensor, Q: torch.Tensor, model: CompiledModel, batch: int,
                 weights: str, dtype: torch.dtype, device: torch.device, kernel: str,
                 signed: bool = False, absolute: bool = False) -> None:
        if signed and absolute:
            raise ValueError("the |z| bound of signed tokens needs the dense stepper")
        self.V, self.Q, self.weights, self.kernel = V, Q, weights, kernel
        self.model, self.dtype, self.device = model, dtype, device
        self.absolute = absolute
        self.decoder = TokenDecoder(V, Q, batch, weights=weights, dtype=dtype, device=device,
                                    scale=model.scale, normalise=model.normalise,
                                    signed=signed)

    def prefill_pays(self, prompt: int, fields: int) -> bool:
        """Prefilling (chunked kernel, then folding S into the decoder's Nᵀ, O(H·d²·d_out)
        per row) against stepping the prompt token by token (O(F·K·d_out) per row and
        token, plus a fixed Python cost per step), in flop-equivalents: the fold alone
        dominates for machines (unary_mul: 10.9 s prefilled vs 0.5 s stepped, B = 256)
        and context-placement prompts; very long prompts over small d still prefill."""
        decoder = self.decoder
        B, H, d, d_out = decoder.batch, decoder.H, decoder.d, decoder.d_out
        reads = 1 if decoder.unit else (decoder.k_index.shape[1] if decoder.sparse else H * d)
        stepped = prompt * (B * fields * reads * d_out * INDEX_PENALTY + STEP_OVERHEAD)
        prefilled = B * (prompt * 4 * H * d * d + 2 * H * d * d * d_out)
        return prefilled < stepped

    def step(self, coords: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return self.decoder.step(coords, update)

    def prefill(self, Z: torch.Tensor) -> torch.Tensor:
        B = Z.shape[0]
        state = RecurrentState.empty(B, self.V, self.dtype, self.device, layout="shared")
        kernel = "auto" if self.kernel in ("auto", "recurrent") else self.kernel
        Y = mhla(Z.abs() if self.absolute else Z, self.V, self.Q, self.model.scale,
                 self.model.normalise, kernel, state=state, weights=self.weights)
        self.decoder.load_shared(state.tensor, state.length, self.V, self.Q, self.weights)
        return Y.to(self.dtype)


class SparseWeightsStepper:
    """Sparse weights through `forms.sparse.SparseDecoder`: its state holds the entries
    written so far, never the (d+1)·d_out rows of the folded state. `absolute` feeds |z|
    and |V|, |Q| (the rounding bound), for signed tokens too (an upper bound)."""

    def __init__(self, V: torch.Tensor, Q: torch.Tensor, model: CompiledModel, batch: int,
                 weights: str, dtype: torch.dtype, device: torch.device,
                 signed: bool = False, absolute: bool = False) -> None:
        self.decoder = SparseDecoder(V, Q, batch, weights=weights, dtype=dtype, device=device,
                                     scale=model.scale, normalise=model.normalise,
                                     signed=signed, absolute=absolute)

    def prefill_pays(self, prompt: int, fields: int) -> bool:
        """Never: a prefill's dense state is what this stepper exists to avoid."""
        return False

    def step(self, coords: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return self.decoder.step(coords, update)

    def prefill(self, Z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never chosen
        raise ValueError("sparse weights are stepped, not prefilled")


class DenseStepper:
    """Dense recurrent steps (kernel="recurrent", and tokens that are not binary).

    `absolute` feeds |z|: the stepper then computes E = Σ_h |V_h| S_abs |Q_h| |z|, with
    S_abs = Σ |z||z|ᵀ ≥ |S|, the bound on every output's sum of absolute terms."""

    def __init__(self, V: torch.Tensor, Q: torch.Tensor, model: CompiledModel, batch: int,
                 weights: str, dtype: torch.dtype, device: torch.device, tokens: Tokens,
                 kernel: str, absolute: bool = False) -> None:
        self.V, self.Q, self.weights, self.kernel = V, Q, weights, kernel
        self.model, self.dtype, self.tokens, self.absolute = model, dtype, tokens, absolute
        self.state = RecurrentState.empty(batch, V, dtype, device)
        self.prepared = prepare(V, Q, weights)

    def prefill_pays(self, prompt: int, fields: int) -> bool:
        """Always: the dense state is the prefill's own state, nothing to fold."""
        return True

    def step(self, coords: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        z = self.tokens.dense(coords, self.dtype)
        if self.absolute:
            z = z.abs()
        active = (update == coords).all(dim=1)  # finished rows come with padding codes
        return step_prepared(self.prepared, self.state, z, self.model.scale,
                             self.model.normalise, active)

    def prefill(self, Z: torch.Tensor) -> torch.Tensor:
        self.state = RecurrentState.empty(Z.shape[0], self.V, self.dtype, Z.device, "shared")
        kernel = "auto" if self.kernel == "recurrent" else self.kernel
        Y = mhla(Z.abs() if self.absolute else Z, self.V, self.Q, self.model.scale,
                 self.model.normalise, kernel, state=self.state, weights=self.weights)
        return Y.to(self.dtype)


class ReferenceStepper:
    """Recomputes every output from the whole history with the loop definition."""

    def __init__(self, V: torch.Tensor, Q: torch.Tensor, model: CompiledModel,
                 weights: str, dtype: torch.dtype, tokens: Tokens,
                 absolute: bool = False) -> None:
        self.V = V.to(FORMATS[weights]).to(dtype)
        self.Q = Q.to(FORMATS[weights]).to(dtype)
        self.model, self.dtype, self.tokens, self.absolute = model, dtype, tokens, absolute
        self.history: list[torch.Tensor] = []

    def _dense(self, coords: torch.Tensor) -> torch.Tensor:
        z = self.tokens.dense(coords, self.dtype)
        return z.abs() if self.absolute else z

    def step(self, coords: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        # A finished row's token is masked from the history (its state stops growing).
        self.history.append(self._dense(update))
        Z = torch.stack(self.history, dim=1)
        Z[:, -1] = self._dense(coords)  # it still queries with its own token
        return mhla_reference(Z, self.V, self.Q, self.model.scale, self.model.normalise)[:, -1]

    def prefill(self, Z: torch.Tensor) -> torch.Tensor:
        Z = Z.abs() if self.absolute else Z
        self.history.extend(Z.unbind(1))
        return mhla_reference(Z, self.V, self.Q, self.model.scale, self.model.normalise)
