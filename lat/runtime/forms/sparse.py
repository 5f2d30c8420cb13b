"""Sparse weights: one-hot tables run without ever building a dense V, Q or decode state.

Big compiled tables (a memory's key→value map, an automaton's transition table) have a
handful of nonzeros per column of V and per row of Q, so they are carried as torch sparse
COO tensors (same shapes as the dense ones). Two forms run them:

- `mhla_sparse`: the whole-sequence form (the registry's "sparse"): per head, the
  queries Q_h z_t and values V_h z_s come from sparse matmuls and the causal T×T scores
  are dense — exact like `reference.py`, with O(nnz·B·T + B·T²·(d + d_out)) work;
- `SparseDecoder`: the coordinate decoder of `decoder.py` with a *sparse* folded state.
  Nᵀ = Σ_h Q_hᵀ S V_hᵀ has d+1 rows of d_out per sequence (1.6 GB for a 10,000-state
  automaton), but a token c only adds coef·(V_h z) to the rows k where Q_h[c, k] ≠ 0, and
  V_h z has as many entries as V's columns at the token's codes. So the state is kept as
  a sorted list of its nonzero entries (key (row·(d+1) + k)·d_out + j, value): a step
  gathers the token's entries from per-code tables (CSR by code), joins the Q and V
  entries of each (row, head), merges them into the list, and reads y = Σ_f Nᵀ[c_f] by
  binary search. Memory grows with the entries written, never with d·d_out.

The rollout picks the sparse decoder by size (`prefers_sparse`), as it picks prefill.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lat.runtime.forms.layouts import finish, mask_lengths, state_dtype, weight_dtype

#: Dense decode state per sequence (floats, (d+1)·d_out) above which a rollout runs the
#: sparse decoder (dense weights: also needs `SPARSE_DENSITY`). Below it the dense
#: decoder is faster (its per-token work is as small, without the sparse join) and still
#: batches ≥ 256 rows within the rollout's state budget; above it batches shrink.
SPARSE_STATE_FLOATS = 1 << 17
#: The same for one head whose Q has at most one nonzero per row (Q = I: a one-hot
#: automaton or memory): a token then adds one row, and the sparse decoder wins earlier.
SPARSE_STATE_FLOATS_ONE_PER_ROW = 1 << 15
#: Sparse weights with more dense entries than this are never densified to run them.
SPARSE_WEIGHT_FLOATS = 1 << 22
SPARSE_DENSITY = 0.01  # fraction of nonzero weights below which dense weights go sparse


def coo(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...],
        coalesced: bool = False) -> torch.Tensor:
    """A sparse COO tensor from trusted indices (built here or checked on load), coalesced
    (row-major, unique) — torch's invariant checks are off because the callers check."""
    tensor = torch.sparse_coo_tensor(indices, values, shape, check_invariants=False,
                                     is_coalesced=coalesced)
    return tensor if coalesced else tensor.coalesce()


def is_sparse(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a sparse COO tensor (the carrier of sparse weights)."""
    return tensor.layout == torch.sparse_coo


def canonical_sparse(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` as a coalesced sparse COO tensor without stored zeros (row-major order)."""
    sparse = (tensor if is_sparse(tensor) else tensor.to_sparse()).coalesce()
    values = sparse.values()
    if bool((values == 0).any()):
        keep = values != 0
        sparse = coo(sparse.indices()[:, keep], values[keep], sparse.shape, coalesced=True)
    return sparse


def densify(tensor: torch.Tensor) -> torch.Tensor:
    """The dense tensor (itself when already dense)."""
    return tensor.to_dense() if is_sparse(tensor) else tensor


def stored_values(tensor: torch.Tensor) -> torch.Tensor:
    """Every entry that can be nonzero: the values of a sparse tensor, else the tensor."""
    return canonical_sparse(tensor).values() if is_sparse(tensor) else tensor


def nonzero_count(tensor: torch.Tensor) -> int:
    return int(canonical_sparse(tensor).values().numel() if is_sparse(tensor)
               else torch.count_nonzero(tensor))


def prefers_sparse(V: torch.Tensor, Q: torch.Tensor) -> bool:
    """Whether a rollout should run the sparse decoder: sparse weights that are big dense
    or whose dense decode state would be big; dense weights whose decode state would be
    big (earlier for one head with at most one nonzero per row of Q) and which are almost
    all zeros."""
    H, d_out, d = V.shape
    big_state = (d + 1) * d_out >= SPARSE_STATE_FLOATS
    if is_sparse(V) or is_sparse(Q):
        return big_state or V.numel() + Q.numel() > SPARSE_WEIGHT_FLOATS
    if (d + 1) * d_out < SPARSE_STATE_FLOATS_ONE_PER_ROW:
        return False
    q_entries = nonzero_count(Q)
    if not big_state and (H > 1 or q_entries > d):
        return False
    total = V.numel() + Q.numel()
    return nonzero_count(V) + q_entries < SPARSE_DENSITY * total


def rounded_sparse(tensor: torch.Tensor, weights: str | torch.dtype,
                   dtype: torch.dtype | None = None, absolute: bool = False) -> torch.Tensor:
    """The canonical sparse tensor with its values rounded to the weight format and held
    in the state format (as the dense forms use rounded weights); |values| with `absolute`."""
    w = weight_dtype(weights)
    sparse = canonical_sparse(tensor)
    values = sparse.values().to(w).to(dtype or state_dtype(w))
    if absolute:
        values = values.abs()
    return coo(sparse.indices(), values, sparse.shape, coalesced=True)


# --------------------------------------------------------------------------------------
# The whole-sequence form
# --------------------------------------------------------------------------------------


def mhla_sparse(
    Z: torch.Tensor,
    V: torch.Tensor,
    Q: torch.Tensor,
    scale: float = 1.0,
    normalise: bool = False,
    *,
    state: object | None = None,
    lengths: torch.Tensor | None = None,
    weights: str | None = None,
) -> torch.Tensor:
    """y_t = scale · Σ_h V_h Σ_{s≤t} z_s (z_sᵀ Q_h z_t) with V, Q sparse (or dense).

    Per head: queries Q_h z_t and values V_h z_s by sparse matmuls, the causal scores
    z_sᵀ (Q_h z_t) dense. Does not continue a state (like the reference form).
    """
    if state is not None:
        raise ValueError("the sparse form does not continue a state")
    Z = mask_lengths(Z, lengths)
    w = weight_dtype(weights) if weights is not None else Z.dtype
    sd = state_dtype(w) if weights is not None else Z.dtype
    B, T, d = Z.shape
    H, d_out, _ = V.shape
    V, Q = rounded_sparse(V, w, sd), rounded_sparse(Q, w, sd)
    flat = Z.to(sd).reshape(B * T, d).T  # (d, B·T)
    causal = torch.ones(T, T, dtype=torch.bool, device=Z.device).tril()
    Y = torch.zeros(B, T, d_out, dtype=sd, device=Z.device)
    for h in range(H):
        queries = torch.sparse.mm(Q[h], flat).T.reshape(B, T, d)  # Q_h z_t
        values = torch.sparse.mm(V[h], flat).T.reshape(B, T, d_out)  # V_h z_s
        scores = queries @ Z.to(sd).transpose(1, 2)  # [b, t, s] = z_sᵀ Q_h z_t
        Y += scores.masked_fill(~causal, 0.0) @ values
    return finish(Y, scale, normalise)


# --------------------------------------------------------------------------------------
# Per-code tables and the sparse recurrent decoder
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeTable:
    """The nonzeros of a weight grouped by token code (CSR): entries ptr[c]..ptr[c+1]-1
    belong to code c; `target` is V's flat output column h·d_out + j, or Q's state row k;
    code d (nothing) has none."""

    ptr: torch.Tensor  # (d + 2,)
    count: torch.Tensor  # (d + 1,)
    head: torch.Tensor  # (nnz,)
    target: torch.Tensor  # (nnz,)
    coef: torch.Tensor  # (nnz,)

    @staticmethod
    def build(code: torch.Tensor, head: torch.Tensor, target: torch.Tensor,
              coef: torch.Tensor, codes: int) -> CodeTable:
        order = torch.argsort(code, stable=True)
        count = torch.bincount(code, minlength=codes + 1)[: codes + 1]
        ptr = torch.zeros(codes + 2, dtype=torch.long, device=code.device)
        ptr[1:] = torch.cumsum(count, 0)
        return CodeTable(ptr, count, head[order], target[order], coef[order])

    def gather(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a flat tensor of codes: (owner, entry) — each entry of each code, with the
        position in `codes` it belongs to."""
        n = self.count.index_select(0, codes)
        total = int(n.sum())
        owner = torch.repeat_interleave(torch.arange(codes.numel(), device=codes.device), n,
                                        output_size=total)
        first = torch.cumsum(n, 0) - n
        entry = (self.ptr.index_select(0, codes) - first).index_select(0, owner) + \
            torch.arange(total, device=codes.device)
        return owner, entry


def value_table(V: torch.Tensor, d: int) -> CodeTable:
    """V's columns by code: entry (h, j, c) of V becomes code c → column h·d_out + j."""
    h, j, c = V.indices()
    return CodeTable.build(c, h, h * V.shape[1] + j, V.values(), d)


def query_table(Q: torch.Tensor, d: int) -> CodeTable:
    """Q's rows by code: entry (h, c, k) of Q becomes code c → state row k, head h."""
    h, c, k = Q.indices()
    return CodeTable.build(c, h, k, Q.values(), d)


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(owner, position): every position starts[i] .. starts[i] + counts[i] - 1."""
    total = int(counts.sum())
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device),
                                    counts, output_size=total)
    first = torch.cumsum(counts, 0) - counts
    position = (starts - first).index_select(0, owner) + torch.arange(total,
                                                                      device=counts.device)
    return owner, position


class SparseDecoder:
    """Batched recurrent decode of binary (or, with `signed`, ±unit) tokens given by their
    codes, for sparse weights, with a sparse folded state (see the module docstring).

    Same contract as `decoder.TokenDecoder.step`: coords/update (B, F) long in [0, d]
    (signed: d+1+c is −e_c, 2d+1 nothing); rows of `update` set to nothing skip the update.
    """

    def __init__(self, V: torch.Tensor, Q: torch.Tensor, batch: int, *, weights: str = "fp32",
                 dtype: torch.dtype | None = None, device: torch.device | str = "cpu",
                 scale: float = 1.0, normalise: bool = False, signed: bool = False,
                 absolute: bool = False) -> None:
        w = weight_dtype(weights)
        sd = dtype or state_dtype(w)
        self.device = torch.device(device)
        H, d_out, d = V.shape
        self.H, self.d, self.d_out, self.batch = H, d, d_out, batch
        self.scale, self.normalise, self.length, self.signed = scale, normalise, 0, signed
        # |z| for the rounding bound: every code counts positive (for signed tokens an
        # upper bound on |e_a − e_b|, so the bound only grows: never a missed flag)
        self.absolute = absolute
        Vr = rounded_sparse(V, w, sd, absolute).to(self.device)
        Qr = rounded_sparse(Q, w, sd, absolute).to(self.device)
        self.values, self.queries = value_table(Vr, d), query_table(Qr, d)
        self.dtype = sd
        self.keys = torch.zeros(0, dtype=torch.long, device=self.device)  # sorted, unique
        self.entries = torch.zeros(0, dtype=sd, device=self.device)

    def _split(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base code in [0, d] and sign of each code (signed codes d+1.. are −e_c)."""
        d = self.d
        ones = torch.ones(codes.shape, dtype=self.dtype, device=codes.device)
        if not self.signed:
            return codes, ones
        negative = codes > d
        base = torch.where(negative, codes - (d + 1), codes)
        return base, ones if self.absolute else 1.0 - 2.0 * negative.to(self.dtype)

    def _update(self, update: torch.Tensor) -> None:
        B, F = update.shape
        H, d, d_out = self.H, self.d, self.d_out
        base, sign = self._split(update.reshape(-1))
        # V z per sequence and head: entries (sequence, column, value)
        v_owner, v_entry = self.values.gather(base)
        v_row = v_owner // F
        v_column = self.values.target.index_select(0, v_entry)
        v_value = self.values.coef.index_select(0, v_entry) * sign.index_select(0, v_owner)
        # Q_hᵀ z: entries (sequence, head, state row, coef)
        q_owner, q_entry = self.queries.gather(base)
        q_row = q_owner // F
        q_head = self.queries.head.index_select(0, q_entry)
        q_target = self.queries.target.index_select(0, q_entry)
        q_coef = self.queries.coef.index_select(0, q_entry) * sign.index_select(0, q_owner)
        if not v_value.numel() or not q_coef.numel():
            return
        # join on (sequence, head): every Q entry meets every V entry of its group
        v_group = v_row * H + torch.div(v_column, d_out, rounding_mode="floor")
        order = torch.argsort(v_group, stable=True)
        sorted_group = v_group.index_select(0, order)
        q_group = q_row * H + q_head
        low = torch.searchsorted(sorted_group, q_group)
        high = torch.searchsorted(sorted_group, q_group, right=True)
        pair_q, pair_position = _ranges(low, high - low)
        pair_v = order.index_select(0, pair_position)
        keys = ((q_row.index_select(0, pair_q) * (d + 1) + q_target.index_select(0, pair_q))
                * d_out + v_column.index_select(0, pair_v) % d_out)
        values = q_coef.index_select(0, pair_q) * v_value.index_select(0, pair_v)
        merged, inverse = torch.unique(torch.cat([self.keys, keys]), sorted=True,
                                       return_inverse=True)
        entries = torch.zeros(merged.numel(), dtype=self.dtype, device=self.device)
        entries.index_add_(0, inverse, torch.cat([self.entries, values]))
        self.keys, self.entries = merged, entries

    def step(self, coords: torch.Tensor, update: torch.Tensor | None = None) -> torch.Tensor:
        """Add the tokens `update` (default: `coords`) and return outputs for `coords`."""
        if update is None:
            update = coords
        B, F = coords.shape
        d, d_out = self.d, self.d_out
        self._update(update)
        base, sign = self._split(coords.reshape(-1))
        row = torch.arange(B, device=coords.device).repeat_interleave(F)
        first = (row * (d + 1) + base) * d_out  # the state row Nᵀ[c] of each code
        low = torch.searchsorted(self.keys, first)
        high = torch.searchsorted(self.keys, first + d_out)
        owner, position = _ranges(low, high - low)
        y = torch.zeros(B * d_out, dtype=self.dtype, device=self.device)
        y.index_add_(0, row.index_select(0, owner) * d_out
                     + self.keys.index_select(0, position) % d_out,
                     self.entries.index_select(0, position) * sign.index_select(0, owner))
        y = y.view(B, d_out)
        self.length += 1
        return finish(y[:, None], self.scale, self.normalise, start=self.length - 1)[:, 0]
