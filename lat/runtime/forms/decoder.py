"""The coordinate decoder: recurrent decode of binary tokens given by their coordinates.

The tokens one-hot Interface fields build are sums of unit vectors, so a token is a row of
coordinates and a decode step touches only the state rows those coordinates name
(`TokenDecoder`, the folded layout of `layouts.RecurrentState`).
"""

from __future__ import annotations

import torch

from lat.runtime.forms.layouts import fold, prepare, state_dtype, weight_dtype


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
        w = weight_dtype(weights)
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
