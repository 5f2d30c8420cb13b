"""universal-automaton: learn the universal automaton executor (context placement) from
traces of random automata, and count the samples needed to execute unseen automata exactly.

The executor (lat.compiler.lower.automaton.lower_automaton_context) has fixed weights for
≤ Q states and 2 symbols; a program is its prompt: one key/value token per table entry,
then `bos`, then the fed-back (state, symbol) queries. For each size Q:

1. draw random automata with exactly Q states over {0, 1} (uniform transition table,
   start state q0, each state accepting with probability 1/2), compile them in context
   placement (same weights for all), and record rollouts of random words (length ≤ 12,
   float64) — one trace = one automaton and one word;
2. fit Algorithm 1 (`lat.learner.solve.fit`) on the first N traces, N = 1, 2, 4, 8, …;
3. run the learned weights, bound to each of the held-out automata (never trained on),
   on random words of length ≤ 24, and compare decoded state traces and verdicts with the
   reference interpreter.

`samples_needed` is the smallest N (traces; regression pairs in `samples_needed_pairs`)
at which every held-out run is exact; `heldout_exact_fraction` is the fraction of held-out
runs that are exact at the largest N tried.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from lat.experiments import pyplot, save_plot

SYMBOLS = ("0", "1")


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


def run(quick: bool = False, out: Path = Path("."), scale: float = 1.0,
        sizes: tuple[int, ...] | None = None) -> dict:
    from lat.api import expected_report, run_report
    from lat.compiler import compile_source
    from lat.learner.solve import fit
    from lat.learner.traces import record_traces
    from lat.runtime.execute import rollout
    from lat.runtime.model import CompiledModel

    rng = np.random.default_rng(0)
    sizes = sizes or ((2, 3, 4) if quick else (2, 3, 4, 6, 8))
    max_traces = max(8, int((128 if quick else 1024) * scale))
    held_automata = max(4, int((8 if quick else 64) * scale))
    held_words = 8 if quick else 32
    results = {}
    curves = {}
    for Q in sizes:
        clock = time.perf_counter()
        train = []
        for i in range(max_traces):
            model = compile_source(random_automaton(Q, rng, f"t{i}"), placement="context").model
            train.append((record_traces(model, words(1, 12, rng)), None))
        pairs = [(t.tokens[0], t.outputs[0]) for t, _ in train]
        held = []
        for i in range(held_automata):
            c = compile_source(random_automaton(Q, rng, f"h{i}"), placement="context")
            held.append((c, words(held_words, 24, rng)))
        curve = []
        n = 1
        needed = None
        while n <= max_traces:
            f = fit(pairs[:n])
            ok = total = 0
            for c, ws in held:
                learned = CompiledModel(V=torch.from_numpy(f.V), Q=torch.from_numpy(f.Q),
                                        interface=c.model.interface)
                for w, r in zip(ws, rollout(learned, ws, dtype="fp64"), strict=True):
                    got = run_report(learned, r)
                    want = expected_report(c.declaration, w)
                    ok += all(got[k] == v for k, v in want.items())
                    total += 1
            curve.append({"traces": n, "pairs": f.samples, "heads": f.heads,
                          "heldout_exact_fraction": ok / total})
            if ok == total and needed is None:
                needed = curve[-1]
                break
            n *= 2
        curves[Q] = curve
        results[str(Q)] = {
            "states": Q, "symbols": len(SYMBOLS),
            "d": held[0][0].model.interface.d,
            "samples_needed": needed["traces"] if needed else None,
            "samples_needed_pairs": needed["pairs"] if needed else None,
            "heldout_exact_fraction": curve[-1]["heldout_exact_fraction"],
            "heldout_runs": held_automata * held_words,
            "heldout_automata": held_automata,
            "max_traces_tried": max_traces,
            "seconds": time.perf_counter() - clock,
        }

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for Q, curve in curves.items():
        axes[0].semilogx([c["traces"] for c in curve],
                         [c["heldout_exact_fraction"] for c in curve], "o-", label=f"{Q} states")
    axes[0].set_xlabel("training traces (random automata, one word each; log)")
    axes[0].set_ylabel("held-out runs exact (fraction)")
    axes[0].set_title("Learning the universal automaton executor")
    axes[0].legend(fontsize=8)
    xs = [r["states"] for r in results.values() if r["samples_needed"]]
    axes[1].semilogy(xs, [r["samples_needed_pairs"] for r in results.values()
                          if r["samples_needed"]], "o-")
    axes[1].set_xlabel("number of states")
    axes[1].set_ylabel("regression pairs needed for exact execution (log)")
    axes[1].set_title("Samples needed vs automaton size")
    plot = save_plot(fig, out, "universal-automaton.png")
    return {"setting": {"symbols": len(SYMBOLS), "train_word_max_len": 12,
                        "heldout_word_max_len": 24, "heldout_words_per_automaton": held_words},
            "sizes": results, "curves": {str(k): v for k, v in curves.items()},
            "plots": [plot]}
