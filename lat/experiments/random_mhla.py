"""random-mhla: learn random MHLA teachers with Algorithm 1 and with SGD (PAPER_NOTES §5.1).

Teacher: H heads, V_h ∈ R^{1×d} (scalar output, as in the paper), Q_h ∈ R^{d×d}, entries
N(0,1)/√d. Tokens: T = 16 per sequence, entries N(0, 1/d) (unit expected norm). Targets:
the causal output at every position (every prefix is one sample, as in the paper).

- Algorithm 1: reduced cubic features of every prefix (d²(d+1)/2 columns, built densely
  here because Gaussian tokens make them dense), least squares in float64, heads by SVD
  (`lat.learner.heads.recover_heads` without packing: H = rank Ŵ, the paper's rule).
  Normal equations (LU solve) when samples ≥ ψ (with one refinement step), minimum-norm
  `lstsq` otherwise. Trained on ~1.5·ψ samples.
- SGD: `lat.learner.sgd.train_sgd` — Adam on an H-head MHLA (the teacher's head count),
  float32, lr 1e-2, batch 32 sequences, a fixed number of steps (1000 quick, 20000 full;
  a step count, not a time budget, so the numbers do not depend on machine load).
- Test error: relative MSE (MSE / mean y²) on 64 fresh sequences, all positions.
- Error vs samples: Algorithm 1 at several sample counts around ψ (one teacher per d).
- Error vs time: SGD's train-MSE history against Algorithm 1's (seconds, test error) point.

`heads_recovered` is rank Ŵ. Because the symmetric feature S[j,k] = S[k,j] makes Ŵ
unique only up to an antisymmetric part, the minimum-norm Ŵ of one random head usually
has rank d (the coefficients split evenly between (j,k) and (k,j)); the function computed
is the teacher's all the same (PAPER_NOTES §2, open question 9). `heads_minimal` is what
`lat.learner.minimise.minimise_heads` finds in that freedom (not timed with Algorithm 1):
the teacher's H when the search succeeds.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lat.experiments import pyplot, save_plot
from lat.experiments.common import mhla_causal, prefix_features_dense, relative_error
from lat.learner.features import Coefficients, n_features
from lat.learner.heads import head_coefficients, recover_heads
from lat.learner.minimise import minimise_heads

T = 16
DIMS = (4, 8, 16)
HEADS = (1, 2, 4)


def teacher(d: int, heads: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return (rng.standard_normal((heads, 1, d)) / np.sqrt(d),
            rng.standard_normal((heads, d, d)) / np.sqrt(d))


def tokens(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((n, T, d)) / np.sqrt(d)


def minimal_heads(V: np.ndarray, Q: np.ndarray) -> int:
    """The fewest heads the minimiser finds with the same coefficients as (V, Q)."""
    d = V.shape[2]
    if V.shape[0] <= 1:
        return int(V.shape[0])
    found = minimise_heads(Coefficients.from_dense(head_coefficients(V, Q), d), d, 1,
                           initial=(V, Q), max_heads=V.shape[0] - 1)
    return int(V.shape[0] if found is None else found[0].shape[0])


def algorithm1(Z: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Features, min-norm least squares, heads; returns V, Q, seconds."""
    clock = time.perf_counter()
    d = Z.shape[2]
    F = prefix_features_dense(Z)
    y = Y.reshape(F.shape[0], -1)
    W = None
    if F.shape[0] >= F.shape[1]:  # normal equations, one step of iterative refinement
        G = F.T @ F
        try:
            W = np.linalg.solve(G, F.T @ y)
            W += np.linalg.solve(G, F.T @ (y - F @ W))
        except np.linalg.LinAlgError:
            W = None
    if W is None:  # fewer samples than features (or singular): minimum-norm lstsq
        W, *_ = np.linalg.lstsq(F, y, rcond=1e-12)
    V, Q = recover_heads(Coefficients.from_dense(W, d), d, 1)
    return V, Q, time.perf_counter() - clock


def run(quick: bool = False, out: Path = Path("."), scale: float = 1.0,
        dims: tuple[int, ...] = DIMS, heads: tuple[int, ...] = HEADS) -> dict:
    from lat.learner.sgd import train_sgd

    rng = np.random.default_rng(0)
    sgd_steps = max(100, int((1000 if quick else 20000) * scale))
    factor = 1.5
    results = {}
    histories = {}
    for d in dims:
        psi = n_features(d)
        test = tokens(64, d, rng)
        for H in heads:
            V0, Q0 = teacher(d, H, rng)
            n_seq = int(np.ceil(factor * psi / T))
            Z = tokens(n_seq, d, rng)
            Y = mhla_causal(Z, V0, Q0)
            Yt = mhla_causal(test, V0, Q0)
            V, Q, alg1_seconds = algorithm1(Z, Y)
            alg1_error = relative_error(mhla_causal(test, V, Q), Yt)
            sgd = train_sgd(list(zip(Z, Y, strict=True)), H, steps=sgd_steps, lr=1e-2,
                            seed=int(rng.integers(1 << 30)), batch_size=32)
            sgd_error = relative_error(mhla_causal(test, sgd.V.astype(np.float64),
                                                   sgd.Q.astype(np.float64)), Yt)
            scale_y = float(np.mean(Y ** 2))
            histories[f"d={d},H={H}"] = [(s, m / scale_y) for s, m in sgd.history]
            results[f"d={d},H={H}"] = {
                "d": d, "H": H, "features": psi, "train_samples": int(n_seq * T),
                "alg1_test_error": alg1_error, "sgd_test_error": sgd_error,
                "alg1_seconds": alg1_seconds, "sgd_seconds": sgd.seconds,
                "sgd_steps": sgd.steps, "heads_recovered": int(V.shape[0]),
                "heads_minimal": minimal_heads(V, Q),
            }
    # error vs samples: one teacher per d (H = 1), Algorithm 1 at several sample counts
    versus = {}
    for d in dims:
        psi = n_features(d)
        V0, Q0 = teacher(d, 1, rng)
        test = tokens(64, d, rng)
        Yt = mhla_causal(test, V0, Q0)
        if quick and d >= 16:
            continue  # the quick run sweeps samples for d = 4 and 8 only
        fractions = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2.0)
        rows = []
        for f in fractions:
            n_seq = max(1, int(round(f * psi / T)))
            Z = tokens(n_seq, d, rng)
            V, Q, seconds = algorithm1(Z, mhla_causal(Z, V0, Q0))
            rows.append({"samples": n_seq * T, "samples_over_features": n_seq * T / psi,
                         "test_error": relative_error(mhla_causal(test, V, Q), Yt),
                         "seconds": seconds})
        versus[f"d={d}"] = rows

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for key, rows in versus.items():
        ax.loglog([r["samples"] for r in rows], [max(r["test_error"], 1e-32) for r in rows],
                  "o-", label=f"Alg. 1, {key}, H=1")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training samples (prefixes, log)")
    ax.set_ylabel("relative test MSE (log)")
    ax.set_title("Alg. 1: test error vs samples\n(exact once samples ≥ d²(d+1)/2)")
    ax.legend(fontsize=8)
    ax = axes[1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, hist) in enumerate(histories.items()):
        c = colors[i % len(colors)]
        ax.loglog([max(s, 1e-4) for s, _ in hist], [max(m, 1e-32) for _, m in hist], "-",
                  color=c, alpha=0.8, label=f"SGD {key}")
        r = results[key]
        ax.loglog([r["alg1_seconds"]], [max(r["alg1_test_error"], 1e-32)], "*", color=c,
                  markersize=10)
    ax.set_xlabel("seconds (log)")
    ax.set_ylabel("relative MSE (log; 0 at 1e-32)")
    ax.set_title("Error vs time: lines SGD (train), ★ Alg. 1 (test)")
    ax.legend(fontsize=6, ncol=2)
    plot = save_plot(fig, out, "random-mhla.png")
    return {
        "setting": {"tokens_per_sequence": T, "samples_over_features": factor,
                    "sgd": {"optimiser": "Adam", "lr": 1e-2, "batch_size": 32,
                            "dtype": "float32", "steps": sgd_steps},
                    "test_sequences": 64, "error": "MSE / mean(y^2) on fresh sequences"},
        "results": results,
        "alg1_error_vs_samples": versus,
        "sgd_history": histories,
        "plots": [plot],
    }
