"""universal-automaton: learn the universal automaton executor (context placement) from
traces of random automata; count the traces needed to execute unseen automata exactly, for
plain Algorithm 1, for Algorithm 1 + the fewest-heads search, and for a softmax transformer.

The executor (lat.compiler.lower.automaton.lower_automaton_context) has fixed weights for
≤ Q states and 2 symbols; a program is its prompt: one key/value token per table entry,
then `bos`, then the fed-back (state, symbol) queries. For each size Q:

1. draw random automata with exactly Q states over {0, 1} (uniform transition table,
   start state q0, each state accepting with probability 1/2), compile them in context
   placement (same weights for all), and record rollouts of random words (length ≤ 12,
   float64) — one trace = one automaton and one word;
2. fit on the first N traces, N = 1, 2, 4, 8, …:
   - **plain Algorithm 1**: `lat.learner.solve.fit(minimise=False)` — least squares and
     SVD heads, nothing else;
   - **Algorithm 1 + fewest heads**: the same fit followed by the head search of `fit`'s
     default (`lat.learner.minimise.minimise_heads`, kept only when it reproduces every
     training output as `fit` requires); it keeps the training outputs but moves off the
     training span, so it can generalise differently. Its budget is wall-clock
     (`head_search_seconds`: `fit`'s 60 s at full size, less at quick size), so a search
     cut short under machine load can find more heads than an unhurried one;
3. judge both on the held-out runs: `heldout_automata` automata never trained on ×
   `heldout_words` random words of length ≤ 24 (≥ 1,000 runs). All runs at once, teacher-
   forced: the learned weights' outputs on the reference token sequences (the runtime's
   chunked form in float64, one batched call) must pick the reference state at every step
   and the reference verdict at the end — the same judgement as a rollout (see softmax.py;
   a test checks the two agree run by run). Every fit judged exact this way is confirmed by
   rolling it out on every held-out run and comparing with the reference interpreter
   (state trace, verdict, steps), and the rollout's count is the one recorded;
4. certify the plain fit on the held-out runs' token sequences (`lat.learner.certificate.
   certify`). The certificate only looks at the span of the training features, which the
   head search does not change, so one certificate serves both; its scope is **sampled**
   (the held-out runs): no exact certificate over all automata of a size exists here.
   A fit certified on those sequences reproduces the executor's outputs on them, so it is
   exact on every held-out run: the certificate is computed only at N where plain
   Algorithm 1 is exact on all of them (elsewhere `certified` is false without a residual).

`traces_to_exact_alg1` / `traces_to_exact_min_heads` are the smallest N (of the doubling
grid) at which every held-out run is exact, `traces_to_certified_alg1` the smallest at which
the certificate holds; null when not reached by `max_traces`.

Softmax baseline (`lat.experiments.softmax`): a small causal softmax transformer trained by
Adam with cross-entropy on the same traces (the first N, for N in `softmax_budgets`),
learning rate chosen on a validation split (separate random automata), 3 seeds at that
rate, judged on the same held-out runs (teacher-forced, which is the same judgement as a
rollout; see softmax.py). `softmax_traces_to_exact` is the smallest budget at which the
median seed is exact on every held-out run (null when none; larger budgets are not trained
once one is exact); `softmax_heldout_exact_fraction` is the median at the largest budget
trained.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from lat.experiments import pyplot
from lat.learner.minimise import MINIMISE_SECONDS

SYMBOLS = ("0", "1")
TRAIN_MAX_LEN, HELD_MAX_LEN = 12, 24


def random_automaton(states: int, rng: np.random.Generator, name: str) -> str:
    names = [f"q{i}" for i in range(states)]
    accept = [q for q in names if rng.random() < 0.5] or [names[0]]
    lines = [f"automaton {name} {{", "  alphabet: 0, 1", f"  states: {', '.join(names)}",
             "  start: q0", f"  accept: {', '.join(accept)}"]
    for q in names:
        for a in SYMBOLS:
            lines.append(f"  {q} {a} -> {names[int(rng.integers(states))]}")
    return "\n".join(lines + ["}"]) + "\n"


def words(count: int, max_len: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    return [tuple(SYMBOLS[i] for i in rng.integers(0, 2, int(rng.integers(0, max_len + 1))))
            for _ in range(count)]


def settings(quick: bool, scale: float) -> dict:
    return {
        "sizes": (2, 3, 4),
        "max_traces": max(8, int((256 if quick else 512) * scale)),
        "heldout_automata": max(2, int(32 * scale)) if quick else 64,
        "heldout_words": 32,
        "validation_automata": max(2, int(16 * scale)),
        "validation_words": 4,
        "softmax_budgets": tuple(b for b in (16, 64, 256, 512)
                                 if b <= max(8, int((256 if quick else 512) * scale))),
        "softmax_steps": max(50, int((100 if quick else 300) * scale)),
        "head_search_seconds": 5.0 if quick else MINIMISE_SECONDS,
        "softmax_shape": {"width": 32, "layers": 2, "heads": 4},
    }


def _record(Q: int, count: int, per: int, max_len: int, rng: np.random.Generator,
            prefix: str) -> list[tuple[object, object, list[tuple[str, ...]]]]:
    from lat.compiler import compile_source
    from lat.learner.traces import record_traces

    out = []
    for i in range(count):
        c = compile_source(random_automaton(Q, rng, f"{prefix}{i}"), placement="context")
        ws = words(per, max_len, rng)
        out.append((c, record_traces(c.model, ws), ws))
    return out


def _judged_exact(V: np.ndarray, Q: np.ndarray, held: list, task) -> int:  # noqa: ANN001
    """Held-out runs exact: teacher-forced on all runs at once; when all are, the count of
    runs whose rollout matches the reference interpreter (the authoritative check)."""
    from lat.experiments.softmax import judge
    from lat.learner.solve import mhla_outputs

    forced = sum(judge(mhla_outputs(V, Q, task.tokens), task))
    return _heldout_exact(V, Q, held) if forced == len(task.tokens) else forced


def _heldout_exact(V: np.ndarray, Q: np.ndarray, held: list) -> int:  # noqa: ANN001
    from lat.api import expected_report, run_report
    from lat.runtime.execute import rollout
    from lat.runtime.model import CompiledModel

    ok = 0
    for c, _, ws in held:
        learned = CompiledModel(V=torch.from_numpy(V), Q=torch.from_numpy(Q),
                                interface=c.model.interface)
        for w, r in zip(ws, rollout(learned, ws, dtype="fp64"), strict=True):
            got = run_report(learned, r)
            want = expected_report(c.declaration, w)
            ok += all(got[k] == v for k, v in want.items())
    return ok


def _fewest_heads(plain, pairs: list, seconds: float):  # noqa: ANN001, ANN202
    """`fit`'s head search on a plain fit, with a wall-clock budget of `seconds`: the heads
    found are kept only when fewer and when they reproduce every training output to
    MINIMAL_HEADS_RTOL × max(1, max|y|) (as `fit` keeps them). Returns (V, Q)."""
    from lat.learner.minimise import MINIMAL_HEADS_RTOL, MINIMISE_MAX_HEADS, minimise_heads
    from lat.learner.solve import mhla_outputs

    if plain.heads <= 1:
        return plain.V, plain.Q
    found = minimise_heads(plain.coefficients, plain.d, plain.d_out, blocks=plain.blocks,
                           support_block=plain.support_block,
                           support_position=plain.support_position,
                           max_heads=min(plain.heads - 1, MINIMISE_MAX_HEADS),
                           initial=(plain.V, plain.Q), seconds=seconds)
    if found is None or found[0].shape[0] >= plain.heads:
        return plain.V, plain.Q
    V, Q = found
    got = mhla_outputs(V, Q, [t for t, _ in pairs])
    error = max(float(np.abs(g - y).max()) for g, (_, y) in zip(got, pairs, strict=True))
    if error > max(plain.train_max_abs_error,
                   MINIMAL_HEADS_RTOL * max(1.0, plain.output_scale)):
        return plain.V, plain.Q  # fewer heads, but not the same outputs
    return V, Q


def _task(recorded: list):  # noqa: ANN202
    from lat.experiments.softmax import Task, automaton_task

    parts = [automaton_task(t, ws) for _, t, ws in recorded]
    return Task([x for p in parts for x in p.tokens], [x for p in parts for x in p.outputs],
                parts[0].fields, [x for p in parts for x in p.judged])


def run(quick: bool = False, out: Path = Path("."), scale: float = 1.0,
        sizes: tuple[int, ...] | None = None, softmax: bool = True) -> dict:
    from lat.experiments.softmax import train_tuned
    from lat.learner.certificate import certify
    from lat.learner.solve import fit

    cfg = settings(quick, scale)
    sizes = sizes or cfg["sizes"]
    max_traces = cfg["max_traces"]
    rng = np.random.default_rng(0)
    results, curves, softmax_curves = {}, {}, {}
    for Q in sizes:
        clock = time.perf_counter()
        train = _record(Q, max_traces, 1, TRAIN_MAX_LEN, rng, "t")
        pairs = [(t.tokens[0], t.outputs[0]) for _, t, _ in train]
        held = _record(Q, cfg["heldout_automata"], cfg["heldout_words"], HELD_MAX_LEN, rng, "h")
        runs = sum(len(ws) for _, _, ws in held)
        test = _task(held)
        domain = [tok for _, t, _ in held for tok in t.tokens]
        curve = []
        found = {"alg1": None, "min_heads": None, "certified": None}
        n = 1
        alg1_seconds = 0.0
        while n <= max_traces:
            start = time.perf_counter()
            plain = fit(pairs[:n], minimise=False)
            alg1_seconds = time.perf_counter() - start
            row = {"traces": n, "pairs": plain.samples, "heads_alg1": plain.heads,
                   "heldout_exact_fraction_alg1": _judged_exact(plain.V, plain.Q, held,
                                                                 test) / runs,
                   "alg1_seconds": alg1_seconds}
            # the head search and the certificate are the slow parts: once a figure has
            # been found it is not recomputed at larger N (the curve says null there)
            row["heads_min_heads"] = row["heldout_exact_fraction_min_heads"] = None
            if found["min_heads"] is None:
                start = time.perf_counter()
                V, Qh = _fewest_heads(plain, pairs[:n], cfg["head_search_seconds"])
                row["heads_min_heads"] = int(V.shape[0])
                row["min_heads_seconds"] = time.perf_counter() - start
                row["heldout_exact_fraction_min_heads"] = _judged_exact(V, Qh, held,
                                                                         test) / runs
            row["certified"] = row["coverage_residual"] = None
            if row["heldout_exact_fraction_alg1"] < 1.0:
                row["certified"] = False  # certified would mean exact on these very runs
            elif found["certified"] is None:
                cert = certify(plain, domain)
                row["certified"] = cert.identifiable
                row["coverage_residual"] = cert.coverage_residual
            curve.append(row)
            for key, ok in (("alg1", row["heldout_exact_fraction_alg1"] == 1.0),
                            ("min_heads", row["heldout_exact_fraction_min_heads"] == 1.0),
                            ("certified", row["certified"])):
                if ok and found[key] is None:
                    found[key] = row
            if all(found.values()):
                break
            n *= 2
        curves[Q] = curve

        def first(key: str, field: str, found: dict = found) -> object:
            return found[key][field] if found[key] else None

        row = {
            "states": Q, "symbols": len(SYMBOLS), "d": held[0][0].model.interface.d,
            "traces_to_exact_alg1": first("alg1", "traces"),
            "traces_to_exact_min_heads": first("min_heads", "traces"),
            "traces_to_certified_alg1": first("certified", "traces"),
            "pairs_to_exact_alg1": first("alg1", "pairs"),
            "pairs_to_exact_min_heads": first("min_heads", "pairs"),
            "pairs_to_certified_alg1": first("certified", "pairs"),
            "heads_alg1_at_exact": first("alg1", "heads_alg1"),
            "heads_min_heads_at_exact": first("min_heads", "heads_min_heads"),
            "heldout_exact_fraction_alg1": curve[-1]["heldout_exact_fraction_alg1"],
            "heldout_exact_fraction_min_heads": next(
                c["heldout_exact_fraction_min_heads"] for c in reversed(curve)
                if c["heldout_exact_fraction_min_heads"] is not None),
            "heldout_runs": runs,
            "heldout_automata": len(held),
            "max_traces_tried": curve[-1]["traces"],
            "max_traces": max_traces,
        }
        if softmax:
            validation = _task(_record(Q, cfg["validation_automata"],
                                       cfg["validation_words"], HELD_MAX_LEN, rng, "v"))
            full = _task(train)
            points = []
            for budget in cfg["softmax_budgets"]:
                record = train_tuned(full.subset(budget), validation, {"heldout": test},
                                     steps=cfg["softmax_steps"], **cfg["softmax_shape"])
                points.append({"traces": budget, **record})
                if record["heldout_exact_fraction_median"] == 1.0:
                    break  # traces-to-exact found: larger budgets are not trained
            softmax_curves[Q] = points
            exact = [p["traces"] for p in points if p["heldout_exact_fraction_median"] == 1.0]
            row["softmax_traces_to_exact"] = exact[0] if exact else None
            row["softmax_heldout_exact_fraction"] = points[-1]["heldout_exact_fraction_median"]
            row["softmax_heldout_exact_fraction_range"] = [
                points[-1]["heldout_exact_fraction_min"], points[-1]["heldout_exact_fraction_max"]]
            row["softmax_budgets"] = [p["traces"] for p in points]
            row["softmax_converged"] = all(p["converged"] for p in points)
        row["seconds"] = time.perf_counter() - clock
        results[str(Q)] = row

    plots = [_plot(curves, softmax_curves, out)]
    return {"setting": {"symbols": len(SYMBOLS), "train_word_max_len": TRAIN_MAX_LEN,
                        "heldout_word_max_len": HELD_MAX_LEN,
                        "heldout_words_per_automaton": cfg["heldout_words"],
                        "traces_grid": "N = 1, 2, 4, ... until plain Algorithm 1 and the "
                                       "head search are exact and the fit is certified",
                        "head_search_seconds": cfg["head_search_seconds"],
                        "head_search": "lat.learner.minimise.minimise_heads with fit's "
                                       "defaults (up to 16 heads, 6 starts per count) and a "
                                       "wall-clock budget of head_search_seconds per fit",
                        "paper": "the paper trains a Llama-style softmax Transformer (4 "
                                 "layers, 16 heads, width 2048, AdamW, 100 epochs) on up to "
                                 "65,536 DFA runs per size and reports training tokens to 99 % "
                                 "next-token accuracy (arXiv 2410.10101, App. G.2/G.4, "
                                 "Fig. 4); we run the sizes, budgets and CPU-sized softmax "
                                 "model in this setting",
                        "softmax": {"budgets": list(cfg["softmax_budgets"]),
                                    "steps": cfg["softmax_steps"], **cfg["softmax_shape"],
                                    "validation_automata": cfg["validation_automata"],
                                    "validation_words": cfg["validation_words"]}},
            "uses_head_search": "only the *_min_heads figures; *_alg1 figures are plain "
                                "Algorithm 1 (fit(minimise=False))",
            "certificate_scope": "sampled: the token sequences of the held-out runs; no exact "
                                 "certificate over all automata of a size is computed",
            "limitations": [
                "traces-to-exact is read off a doubling grid (1, 2, 4, ...), so it is an upper "
                "bound within a factor 2; one random draw of automata per size",
                "exactness is judged on the sampled held-out runs, not on every automaton "
                "and word; the certificate is sampled likewise",
                "the softmax transformer is tried at a few budgets only, with a fixed step "
                "count and a small CPU size (see setting.softmax), not at the paper's scale",
                "the head search has a wall-clock budget (setting.head_search_seconds): "
                "under machine load it may stop before finding few heads, so the "
                "*_min_heads figures can vary between runs; the *_alg1 figures cannot",
            ],
            "sizes": results, "curves": {str(k): v for k, v in curves.items()},
            "softmax_curves": {str(k): v for k, v in softmax_curves.items()},
            "plots": plots}


def _plot(curves: dict, softmax_curves: dict, out: Path) -> str:
    plt = pyplot()
    from matplotlib.ticker import LogLocator, NullFormatter

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), squeeze=False)
    for ax, (Q, curve) in zip(axes[0], curves.items(), strict=True):
        xs = [c["traces"] for c in curve]
        ax.semilogx(xs, [c["heldout_exact_fraction_alg1"] for c in curve], "o-",
                    label="Alg. 1 (plain)")
        mh = [c for c in curve if c["heldout_exact_fraction_min_heads"] is not None]
        ax.semilogx([c["traces"] for c in mh], [c["heldout_exact_fraction_min_heads"]
                                                for c in mh], "s--",
                    label="Alg. 1 + fewest heads (until exact)")
        cert = [c["traces"] for c in curve if c["certified"]]
        if cert:
            ax.axvline(cert[0], color="gray", ls=":", label="certified from here")
        if Q in softmax_curves:
            pts = softmax_curves[Q]
            med = [p["heldout_exact_fraction_median"] for p in pts]
            lo = [p["heldout_exact_fraction_min"] for p in pts]
            hi = [p["heldout_exact_fraction_max"] for p in pts]
            bx = [p["traces"] for p in pts]
            ax.errorbar(bx, med, yerr=[np.subtract(med, lo), np.subtract(hi, med)], fmt="^-",
                        capsize=3, label="softmax transformer (median, min–max of 3 seeds)")
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("training traces (random automata, one word each)")
        ax.set_ylabel("held-out runs exact (fraction)")
        ax.set_title(f"{Q} states")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle("Universal automaton executor: held-out exactness vs training traces",
                 fontsize=10)
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "universal-automaton.png", dpi=110)
    plt.close(fig)
    return "universal-automaton.png"
