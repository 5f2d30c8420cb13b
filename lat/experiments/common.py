"""Helpers shared by the experiments: last-position reduced features, min-norm least squares,
and a small Adam loop for models trained on the last position only."""

from __future__ import annotations

import time

import numpy as np
import torch


def last_features(Z: np.ndarray) -> np.ndarray:
    """Reduced cubic features (N, d²(d+1)/2) of the LAST position of every sequence Z (N,n,d).

    Same column order as lat.learner.features: column pair_index(j,k)·d + l holds
    S[j,k]·z_n[l], S = Σ_s z_s z_sᵀ over all n tokens (the query included), j ≤ k.
    """
    Z = np.asarray(Z, dtype=np.float64)
    d = Z.shape[2]
    S = np.einsum("nsj,nsk->njk", Z, Z)
    ju, ku = np.triu_indices(d)
    pairs = S[:, ju, ku]  # (N, P)
    return np.einsum("np,nl->npl", pairs, Z[:, -1, :]).reshape(Z.shape[0], -1)


def mhla_last(Z: np.ndarray, V: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """MHLA output at the last position: Σ_h V_h S Q_h z_n, float64. V (H,o,d), Q (H,d,d)."""
    Z = np.asarray(Z, dtype=np.float64)
    S = np.einsum("nsj,nsk->njk", Z, Z)
    q = np.einsum("hkl,nl->nhk", Q, Z[:, -1, :])
    return np.einsum("hij,njk,nhk->ni", V, S, q)


def min_norm_lstsq(F: np.ndarray, Y: np.ndarray, rtol: float = 1e-11) -> np.ndarray:
    """Algorithm 1's regression: the minimum-norm least-squares coefficients (ψ, d_out)."""
    W, *_ = np.linalg.lstsq(F, Y, rcond=rtol)
    return W


def lambda_min(F: np.ndarray) -> float:
    """λ_min of Λ_D = FᵀF/N (uncentred, the paper's Lemma A.3), clipped at 0."""
    lam = np.linalg.eigvalsh(F.T @ F / F.shape[0])
    return max(float(lam[0]), 0.0)


def relative_error(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error divided by the mean squared target."""
    return float(np.mean((pred - target) ** 2) / max(np.mean(target ** 2), 1e-300))


def adam_last_position(Z: np.ndarray, Y: np.ndarray, heads: int, *, steps: int, lr: float,
                       seed: int, batch: int = 256,
                       init_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, float,
                                                             list[tuple[float, float]]]:
    """Experiment-local Adam on an H-head MHLA whose loss is the LAST position only.

    lat.learner.sgd.train_sgd fits every prefix; the associative-memory task (and the
    paper's code for it) scores only the query position, so this loop does that.
    Init init_scale·N(0,1)/√d (1: the authors' code); float64; returns V, Q, seconds, history.
    """
    g = torch.Generator().manual_seed(seed)
    Zt = torch.from_numpy(np.asarray(Z, dtype=np.float64))
    Yt = torch.from_numpy(np.asarray(Y, dtype=np.float64))
    n, _, d = Zt.shape
    o = Yt.shape[1]
    V = (init_scale * torch.randn(heads, o, d, generator=g, dtype=torch.float64)
         / d ** 0.5).requires_grad_()
    Q = (init_scale * torch.randn(heads, d, d, generator=g, dtype=torch.float64)
         / d ** 0.5).requires_grad_()
    opt = torch.optim.Adam([V, Q], lr=lr)
    S = torch.einsum("nsj,nsk->njk", Zt, Zt)
    zq = Zt[:, -1, :]

    def forward(idx: torch.Tensor) -> torch.Tensor:
        q = torch.einsum("hkl,nl->nhk", Q, zq[idx])
        return torch.einsum("hij,njk,nhk->ni", V, S[idx], q)

    history: list[tuple[float, float]] = []
    clock = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, n, (min(batch, n),), generator=g)
        loss = ((forward(idx) - Yt[idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, steps // 50) == 0 or step == steps - 1:
            history.append((time.perf_counter() - clock, float(loss.detach())))
    seconds = time.perf_counter() - clock
    return V.detach().numpy(), Q.detach().numpy(), seconds, history


def prefix_features_dense(Z: np.ndarray) -> np.ndarray:
    """Reduced features of EVERY prefix of every sequence Z (n, T, d): (n·T, d²(d+1)/2),
    rows sequence-major, columns as in lat.learner.features (vectorised dense form)."""
    Z = np.asarray(Z, dtype=np.float64)
    n, T, d = Z.shape
    ju, ku = np.triu_indices(d)
    pairs = np.cumsum(Z[:, :, ju] * Z[:, :, ku], axis=1)  # (n, T, P): S_t[j,k]
    return np.einsum("ntp,ntl->ntpl", pairs, Z).reshape(n * T, -1)


def mhla_causal(Z: np.ndarray, V: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Causal MHLA outputs (n, T, d_out) in float64: y_t = Σ_h V_h S_t Q_h z_t."""
    Z = np.asarray(Z, dtype=np.float64)
    S = np.cumsum(np.einsum("ntj,ntk->ntjk", Z, Z), axis=1)
    q = np.einsum("hkl,ntl->nthk", Q, Z)
    return np.einsum("hij,ntjk,nthk->nti", V, S, q)
