"""The coordinate decoder: recurrent decode of binary tokens given by their coordinates.

The tokens one-hot Interface fields build are sums of unit vectors, so a token is a row of
coordinates and a decode step touches only the state rows those coordinates name
(`TokenDecoder`, the folded layout of `layouts.RecurrentState`).
"""

from __future__ import annotations

import torch

from lat.runtime.forms.layouts import finish, fold, prepare, state_dtype, weight_dtype


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
        # Q rows: row c, head h = Q_hᵀ e_c = Q_h[c, :] (a view; dense copies only if used)
        q_view = Qr.permute(1, 0, 2)  # (d, H, d)
        nonzero = q_view != 0
        K = int(nonzero.sum(dim=(1, 2)).max()) if d else 0
        self.unit = bool(
            H == 1 and K <= 1 and int(nonzero.sum()) == d
            and bool((Qr[0].diagonal() == 1).all())
        )  # Q = I: the update row is the token's own coordinate
        self.sparse = H * d >= 4 * K  # few rows per update: index, don't multiply
        if self.sparse and not self.unit:
            K = max(K, 1)
            k_index = torch.full((d + 1, K), d, dtype=torch.long, device=self.device)
            h_index = torch.zeros(d + 1, K, dtype=torch.long, device=self.device)
            coef = torch.zeros(d + 1, K, dtype=sd, device=self.device)
            # every nonzero (row c, head, column) in row-major order, placed at its rank
            # within row c (the order a per-row torch.nonzero gives)
            rows, heads, cols = torch.nonzero(nonzero, as_tuple=True)
            if rows.numel():
                starts = torch.searchsorted(rows, rows, right=False)
                slot = torch.arange(rows.numel(), device=self.device) - starts
                k_index[rows, slot], h_index[rows, slot] = cols, heads
                coef[rows, slot] = q_view[rows, heads, cols]
            self.k_index, self.h_index, self.coef = k_index, h_index, coef
        self.signed = signed
        # dense Q rows, for the dense update only (large: (d+1)·H·d)
        self.q_rows = None if (self.sparse or self.unit) else torch.cat(
            [q_view, zero_row.new_zeros(1, H, d)]).reshape(d + 1, H * d).contiguous()
        if signed:  # codes d+1 … 2d+1: the same rows negated
            self.values = torch.cat([self.values, -self.values]).contiguous()
            if self.q_rows is not None:
                self.q_rows = torch.cat([self.q_rows, -self.q_rows]).contiguous()
            if self.sparse and not self.unit:
                self.k_index = torch.cat([self.k_index, self.k_index])
                self.h_index = torch.cat([self.h_index, self.h_index])
                self.coef = torch.cat([self.coef, -self.coef])
        if self.sparse and not self.unit:
            # the same entries unpadded (CSR by code): a step touches only real ones
            real = self.k_index != d
            self.nnz = real.sum(dim=1)
            self.ptr = torch.cumsum(self.nnz, 0) - self.nnz
            self.e_row = self.k_index[real]
            self.e_head = self.h_index[real]
            self.e_coef = self.coef[real]
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

    def _sparse_update(self, update: torch.Tensor, flat: torch.Tensor) -> None:
        """Nᵀ[j] += coef · V_h z for every nonzero (code, head h, row j, coef) of the
        token's codes, without padding: each entry gathers V_h's columns at the row's codes
        (F rows of d_out) instead of the dense V z of all heads."""
        B, F = update.shape
        codes = update.reshape(-1)
        n = self.nnz.index_select(0, codes)
        total = int(n.sum())
        if not total:
            return
        owner = torch.repeat_interleave(torch.arange(B * F, device=codes.device), n,
                                        output_size=total)
        first = torch.cumsum(n, 0) - n
        index = (self.ptr.index_select(0, codes) - first).index_select(0, owner) + \
            torch.arange(total, device=codes.device)
        row = owner // F
        heads = self.e_head.index_select(0, index)
        picked = update.index_select(0, row)  # (total, F): the codes of the entry's row
        # row (code, head) of values3, flat: V_h's column at each of the row's codes
        v = self.values.view(-1, self.d_out).index_select(
            0, (picked * self.H + heads[:, None]).view(-1))
        v = v.view(total, F, self.d_out).sum(1) if F > 1 else v
        contribution = self.e_coef.index_select(0, index)[:, None] * v
        flat.index_add_(0, row * (self.d + 1) + self.e_row.index_select(0, index),
                        contribution)

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
        csr = self.sparse and not self.unit and B * F * self.k_index.shape[1] > 64
        if csr:
            v = None
        elif F == 1:
            v = self.values.index_select(0, update[:, 0])  # (B, H·d_out)
        else:
            v = self.values.index_select(0, update.reshape(-1)).view(B, F, -1).sum(1)
        if csr:
            self._sparse_update(update, flat)
        elif self.unit:
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
        return finish(y[:, None], self.scale, self.normalise, start=self.length - 1)[:, 0]
