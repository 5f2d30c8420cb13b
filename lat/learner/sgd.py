"""SGD baseline: an H-head MHLA trained with Adam on the same traces as the regression.

The model is the model's (docs/ARCHITECTURE.md, "The model"), scale 1, no normalisation (the
paper's, Yau et al., arXiv 2410.10101):

    y_t = Σ_h V_h Σ_{s≤t} z_s (z_sᵀ Q_h z_t),     V (H, d_out, d), Q (H, d, d).

Every position of every sequence is one sample (the causal prefix ending there), exactly
the samples `solve.fit` regresses on, so the two training errors are comparable.

Initialisation (documented because it decides the early curve): every entry of V and Q is
drawn i.i.d. N(0, 1)/√d from a `torch.Generator` seeded with `seed` — the authors' code's
init (Yau et al., arXiv 2410.10101), here without their 1/(H√d) output scale (it can be folded
into V,
and our model has scale 1). The loss is the mean squared error over every real (unpadded)
position and output coordinate; sequences are zero-padded at the end into batches, which
cannot change earlier outputs because the model is causal. Optimiser: plain Adam
(`torch.optim.Adam`, default betas), constant learning rate `lr`, gradient-norm clip 5 as
in the authors' code.

`history` holds (seconds since the start of training, train MSE over the whole training
set) at the start and after every evaluation point (every epoch, or every `eval_every`
steps); the time spent evaluating is excluded from the seconds, so a time-to-error curve
measures training only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lat.learner.solve import sequence_pairs
from lat.runtime.forms import mhla_masked

__all__ = ["SGDResult", "mhla_forward", "train_sgd"]

GRAD_CLIP = 5.0


@dataclass(frozen=True)
class SGDResult:
    """Trained heads (numpy, in the training dtype), the loss curve and the training time."""

    V: np.ndarray  # (H, d_out, d)
    Q: np.ndarray  # (H, d, d)
    history: list[tuple[float, float]]  # (seconds, train MSE)
    seconds: float
    steps: int = 0
    info: dict[str, object] = field(default_factory=dict)

    @property
    def final_mse(self) -> float:
        return self.history[-1][1] if self.history else math.nan

    def seconds_to(self, mse: float) -> float | None:
        """Training seconds until the train MSE first reached ≤ `mse` (None if never)."""
        for seconds, value in self.history:
            if value <= mse:
                return seconds
        return None


def mhla_forward(Z: torch.Tensor, V: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Causal MHLA outputs (B, T, d_out) of tokens Z (B, T, d): the runtime's differentiable
    masked form (`lat.runtime.forms.mhla_masked`), which autograd trains through."""
    return mhla_masked(Z, V, Q)


def _padded(pairs: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    T = max(t.shape[0] for t, _ in pairs)
    d, d_out = pairs[0][0].shape[1], pairs[0][1].shape[1]
    Z = torch.zeros(len(pairs), T, d, dtype=dtype)
    Y = torch.zeros(len(pairs), T, d_out, dtype=dtype)
    M = torch.zeros(len(pairs), T, 1, dtype=dtype)
    for i, (tokens, outputs) in enumerate(pairs):
        n = tokens.shape[0]
        Z[i, :n] = torch.from_numpy(tokens)
        Y[i, :n] = torch.from_numpy(outputs)
        M[i, :n] = 1.0
    return Z, Y, M


def train_sgd(
    sequences: object,
    heads: int,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float = 1e-2,
    seed: int = 0,
    time_budget: float | None = None,
    batch_size: int = 64,
    dtype: torch.dtype | str = torch.float32,
    eval_every: int | None = None,
    target_mse: float | None = None,
) -> SGDResult:
    """Train an `heads`-head MHLA with Adam on every prefix of `sequences`.

    `sequences`: a `Traces` or (tokens (T, d), outputs (T, d_out)) pairs. Stop after `steps`
    optimiser steps, or `epochs` passes (shuffled mini-batches of `batch_size` sequences),
    or when `time_budget` seconds of training have passed, or when the train MSE reaches
    `target_mse` — whichever comes first (with none of steps/epochs: 1000 steps). `dtype`
    float32 or float64 ("fp32"/"fp64" accepted). Deterministic for a given seed on CPU.
    """
    if isinstance(dtype, str):
        dtype = {"fp32": torch.float32, "fp64": torch.float64, "float32": torch.float32,
                 "float64": torch.float64}[dtype]
    if heads < 1:
        raise ValueError("heads must be ≥ 1")
    pairs = [p for p in sequence_pairs(sequences) if p[0].shape[0] > 0]
    if not pairs:
        raise ValueError("no training samples: every sequence is empty")
    if steps is None and epochs is None:
        steps = 1000
    Z, Y, M = _padded(pairs, dtype)
    n, _, d = Z.shape
    d_out = Y.shape[2]
    count = float(M.sum()) * d_out
    generator = torch.Generator().manual_seed(seed)
    V = (torch.randn(heads, d_out, d, generator=generator, dtype=torch.float64)
         / math.sqrt(d)).to(dtype).requires_grad_(True)
    Q = (torch.randn(heads, d, d, generator=generator, dtype=torch.float64)
         / math.sqrt(d)).to(dtype).requires_grad_(True)
    optimiser = torch.optim.Adam([V, Q], lr=lr)
    batch_size = max(1, min(batch_size, n))
    per_epoch = math.ceil(n / batch_size)
    total = steps if steps is not None else epochs * per_epoch
    if steps is not None and epochs is not None:
        total = min(steps, epochs * per_epoch)
    every = eval_every or (per_epoch if epochs is not None else max(1, total // 100))

    def full_mse() -> float:
        with torch.no_grad():
            sq = 0.0
            for start in range(0, n, 256):
                err = (mhla_forward(Z[start:start + 256], V, Q) - Y[start:start + 256])
                sq += float(((err * M[start:start + 256]) ** 2).sum())
            return sq / count

    history = [(0.0, full_mse())]
    trained = 0.0
    done = 0
    order = torch.randperm(n, generator=generator)
    position = 0
    while done < total:
        clock = time.perf_counter()
        if position >= n:
            order = torch.randperm(n, generator=generator)
            position = 0
        take = order[position:position + batch_size]
        position += batch_size
        mask = M[take]
        err = (mhla_forward(Z[take], V, Q) - Y[take]) * mask
        loss = (err ** 2).sum() / (mask.sum() * d_out)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([V, Q], GRAD_CLIP)
        optimiser.step()
        done += 1
        trained += time.perf_counter() - clock
        if done % every == 0 or done == total:
            history.append((trained, full_mse()))
            if target_mse is not None and history[-1][1] <= target_mse:
                break
        if time_budget is not None and trained >= time_budget:
            if history[-1][0] != trained:
                history.append((trained, full_mse()))
            break
    return SGDResult(
        V=V.detach().numpy().copy(),
        Q=Q.detach().numpy().copy(),
        history=history,
        seconds=trained,
        steps=done,
        info={"heads": heads, "lr": lr, "batch_size": batch_size, "seed": seed,
              "dtype": str(dtype).removeprefix("torch."), "sequences": n,
              "samples": int(M.sum()), "init": "N(0,1)/sqrt(d)", "optimiser": "Adam"},
    )
