"""`lat bench`'s single-run figures: one machine step, and one long automaton input.

- `machine_us_per_step`: wall time per step of one run of the shipped unary_mul machine
  (d = 481, 10 heads) on one sequence, fp32, as the slope between a long run (15x1, 530
  steps) and a short one (1x1, 12 steps), so the per-run setup (token tables, decoder)
  cancels; best of the repetitions;
- `long_input_symbols_per_s`: one input of `LONG_INPUT` symbols (10⁶, 10⁵ under --quick)
  to the compiled 20-state 4-symbol rollout automaton, streamed (`history=False`: only the
  last position's outputs are kept, memory does not grow with the input).
"""

from __future__ import annotations

import random
import time

from lat.api import shipped_program

LONG_INPUT = 1_000_000
MACHINE_WORDS = {"long": tuple("111111111111111x1"), "short": tuple("1x1")}


def machine_us_per_step(repeats: int = 5) -> dict[str, object]:
    """Per-step wall time of a single machine run (see the module docstring)."""
    from lat.compiler import compile_source
    from lat.runtime.execute import rollout

    model = compile_source(shipped_program("unary_mul.lat")).model
    best: dict[str, float] = {}
    steps: dict[str, int] = {}
    rollout(model, [MACHINE_WORDS["short"]])  # warm-up
    for _ in range(repeats):
        for name, word in MACHINE_WORDS.items():
            started = time.perf_counter()
            result = rollout(model, [word])[0]
            seconds = time.perf_counter() - started
            best[name] = min(best.get(name, seconds), seconds)
            steps[name] = result.steps
    slope = (best["long"] - best["short"]) / (steps["long"] - steps["short"])
    return {"us_per_step": max(slope, 0.0) * 1e6, "steps": steps["long"],
            "run_seconds": best["long"], "d": model.d, "heads": model.heads}


def long_input_symbols_per_s(quick: bool = False) -> dict[str, object]:
    """Symbols per second of one long streamed automaton input."""
    from lat.bench import ROLLOUT_SHAPE, automaton_source
    from lat.compiler import compile_source
    from lat.runtime.execute import rollout

    length = LONG_INPUT // 10 if quick else LONG_INPUT
    model = compile_source(automaton_source(ROLLOUT_SHAPE["states"],
                                            ROLLOUT_SHAPE["symbols"])).model
    rng = random.Random(3)
    alphabet = model.interface.input_alphabet
    word = tuple(rng.choice(alphabet) for _ in range(length))
    started = time.perf_counter()
    result = rollout(model, [word], history=False)[0]
    seconds = time.perf_counter() - started
    return {"symbols_per_s": length / seconds, "symbols": length, "seconds": seconds,
            "resolved": result.margin_resolved}


def single_run_figures(quick: bool) -> dict[str, object]:
    """Both figures, as `run_bench` reports them."""
    machine, long = machine_us_per_step(3 if quick else 5), long_input_symbols_per_s(quick)
    return {"machine_us_per_step": machine.pop("us_per_step"), "machine_run": machine,
            "long_input_symbols_per_s": long.pop("symbols_per_s"), "long_input": long}
