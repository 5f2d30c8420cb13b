"""kv-certificate: the paper's key–value association experiment (PAPER_NOTES §5.2, Fig. 2).

Setting (the authors' code, which reproduces the paper's λ_min = 0.06): m = 2 key/value
pairs of width 2, model width d = 4, n = 3 tokens per sequence — the two table tokens
[k_j; v_j] and the query token [k_i; ζ], i uniform, ζ ~ N(0, I). Teacher: one head,
V = [0 I] (output = the value half), Q = [[I,0],[0,0]], read at the last position only
(the ‖q‖²ζ self-attention term included, as in the code). Two input distributions:

- identifiable: keys and values i.i.d. Gaussian columns normalised to unit length;
- unidentifiable: keys a random orthogonal matrix (QR of a Gaussian), values likewise.

For each: λ_min of Λ_D = (1/N) Σ H(Z)H(Z)ᵀ over the 40 reduced features; Algorithm 1 (the
minimum-norm least-squares solution, in float64); a 2-head model trained by Adam on the
last position (experiment-local loop, see common.py); and out-of-distribution (OOD)
errors of each learned model on sequences with i.i.d. N(0,1) entries and n = 5 tokens —
relative MSE against the teacher. A third number, `erm_gap`, is the OOD distance between
two exact training-loss minimisers (the minimum-norm one and the same plus a unit
null-space direction of Λ_D scaled to its norm): 0 means every ERM agrees out of
distribution, which is what λ_min > 0 guarantees (Lemma A.3). A mixture sweep (fraction of
unidentifiable samples) gives the λ_min-vs-error curve of the paper's Fig. 2a.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lat.experiments import pyplot, save_plot
from lat.experiments.common import (
    adam_last_position,
    lambda_min,
    last_features,
    mhla_last,
    min_norm_lstsq,
    relative_error,
)

M, W = 2, 2  # key/value pairs, key (= value) width
D = 2 * W
V_TRUE = np.zeros((1, W, D))
V_TRUE[0, :, W:] = np.eye(W)
Q_TRUE = np.zeros((1, D, D))
Q_TRUE[0, :W, :W] = np.eye(W)


def sample(n: int, unidentifiable: float, rng: np.random.Generator) -> np.ndarray:
    """n sequences (n, M+1, D); each is from the unidentifiable law with that probability."""
    Z = np.zeros((n, M + 1, D))
    orth = rng.random(n) < unidentifiable
    G = rng.standard_normal((n, 2, W, M))
    keys = G[:, 0] / np.linalg.norm(G[:, 0], axis=1, keepdims=True)
    vals = G[:, 1] / np.linalg.norm(G[:, 1], axis=1, keepdims=True)
    if orth.any():
        keys[orth] = np.linalg.qr(G[orth, 0])[0]
        vals[orth] = np.linalg.qr(G[orth, 1])[0]
    Z[:, :M, :W] = np.transpose(keys, (0, 2, 1))
    Z[:, :M, W:] = np.transpose(vals, (0, 2, 1))
    pick = rng.integers(0, M, n)
    Z[:, M, :W] = keys[np.arange(n), :, pick]
    Z[:, M, W:] = rng.standard_normal((n, W))
    return Z


def ood_inputs(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((n, 5, D))


def _evaluate(train: np.ndarray, test: np.ndarray, rng: np.random.Generator, sgd_steps: int,
              seed: int) -> dict:
    F = last_features(train)
    Y = mhla_last(train, V_TRUE, Q_TRUE)
    lam = lambda_min(F)
    coef = min_norm_lstsq(F, Y)
    Ft = last_features(test)
    Yt = mhla_last(test, V_TRUE, Q_TRUE)
    out = {
        "lambda_min": lam,
        "alg1_train_error": relative_error(F @ coef, Y),
        "alg1_ood_error": relative_error(Ft @ coef, Yt),
    }
    # a second exact minimiser: add a null-space direction of Λ_D (if there is one)
    lam_all, U = np.linalg.eigh(F.T @ F / F.shape[0])
    null = U[:, lam_all <= lam_all[-1] * 1e-11]
    if null.shape[1]:
        direction = null @ rng.standard_normal((null.shape[1], coef.shape[1]))
        other = coef + direction * (np.linalg.norm(coef) / np.linalg.norm(direction))
        out["erm_gap"] = relative_error(Ft @ other, Ft @ coef) * np.mean(
            (Ft @ coef) ** 2) / np.mean(Yt ** 2)
        out["erm_gap_train_error"] = relative_error(F @ other, Y)
    else:
        out["erm_gap"] = 0.0
        out["erm_gap_train_error"] = out["alg1_train_error"]
    if sgd_steps:
        V, Q, seconds, _ = adam_last_position(train, Y, heads=2, steps=sgd_steps, lr=1e-2,
                                              seed=seed)
        out["sgd_train_error"] = relative_error(mhla_last(train, V, Q), Y)
        out["sgd_ood_error"] = relative_error(mhla_last(test, V, Q), Yt)
        out["sgd_seconds"] = seconds
    return out


def run(quick: bool = False, out: Path = Path("."), scale: float = 1.0) -> dict:
    rng = np.random.default_rng(0)
    n = max(256, int((2 ** 12 if quick else 2 ** 14) * scale))
    sgd_steps = max(100, int((600 if quick else 6000) * scale))
    test = ood_inputs(4096, rng)
    ident = _evaluate(sample(n, 0.0, rng), test, rng, sgd_steps, 1)
    unident = _evaluate(sample(n, 1.0, rng), test, rng, sgd_steps, 2)
    mixtures = [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] if not quick else [0.0, 0.9, 0.99, 1.0]
    sweep = []
    for p in mixtures:
        r = _evaluate(sample(n, p, rng), test, rng, 0, 0)
        sweep.append({"unidentifiable_fraction": p, **r})

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    xs = [max(s["lambda_min"], 1e-17) for s in sweep]
    ax.loglog(xs, [max(s["erm_gap"], 1e-32) for s in sweep], "o-",
              label="OOD gap between two exact ERMs")
    ax.loglog(xs, [max(s["alg1_ood_error"], 1e-32) for s in sweep], "s--",
              label="Alg. 1 (min-norm) OOD error")
    for s, x in zip(sweep, xs, strict=True):
        ax.annotate(f"{s['unidentifiable_fraction']:g}", (x, max(s["erm_gap"], 1e-32)),
                    fontsize=7)
    ax.set_xlabel("λ_min(Λ_D)  (0 plotted at 1e-17)")
    ax.set_ylabel("relative OOD error (log; 0 at 1e-32)")
    ax.set_title("Mixture sweep (labels: unidentifiable fraction)")
    ax.legend(fontsize=8)
    ax = axes[1]
    names = ["identifiable", "unidentifiable"]
    width = 0.25
    for i, (key, label) in enumerate([("alg1_ood_error", "Alg. 1"),
                                      ("sgd_ood_error", "Adam, 2 heads"),
                                      ("erm_gap", "ERM gap")]):
        vals = [max(r[key], 1e-32) for r in (ident, unident)]
        ax.bar(np.arange(2) + (i - 1) * width, vals, width, label=label)
    ax.set_yscale("log")
    ax.set_xticks(range(2), [f"{nm}\nλ_min={r['lambda_min']:.2g}"
                              for nm, r in zip(names, (ident, unident), strict=True)])
    ax.set_ylabel("relative OOD error (log; 0 at 1e-32)")
    ax.set_title("Out-of-distribution error (N(0,1) tokens, n=5)")
    ax.legend(fontsize=8)
    plot = save_plot(fig, out, "kv-certificate.png")
    return {
        "setting": {"pairs": M, "width": W, "d": D, "tokens": M + 1, "samples": n,
                    "sgd_steps": sgd_steps, "ood_samples": test.shape[0], "ood_tokens": 5},
        "lambda_min_identifiable": ident["lambda_min"],
        "lambda_min_unidentifiable": unident["lambda_min"],
        "ood_error_alg1_identifiable": ident["alg1_ood_error"],
        "ood_error_alg1_unidentifiable": unident["alg1_ood_error"],
        "ood_error_sgd_identifiable": ident["sgd_ood_error"],
        "ood_error_sgd_unidentifiable": unident["sgd_ood_error"],
        "erm_gap_identifiable": ident["erm_gap"],
        "erm_gap_unidentifiable": unident["erm_gap"],
        "identifiable": ident,
        "unidentifiable": unident,
        "mixture_sweep": sweep,
        "published": {"lambda_min_identifiable": 0.06, "lambda_min_unidentifiable": 0.0},
        "plots": [plot],
    }
