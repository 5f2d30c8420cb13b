"""`lat bench`'s learner figures: the float64 Gram against the matmul ceiling, the exact
certificate's domain analysis, a whole default `learn` of a random automaton, and (without
--quick) the benchmark machines of benchmarks/programs: `learn_increment12_s`,
`learn_copy_s`, their peak resident memory, heads and artifact sizes."""

from __future__ import annotations

import time

import torch

from lat.bench import automaton_source, side_by_side

LEARNER_GRAM_SHAPE = {"rows": 16384, "columns": 1024, "batch": 2048}
LEARN_SHAPE = {"states": 64, "symbols": 4, "max_len": 64}  # default learn: exact design
LEARN_SHAPE_QUICK = {"states": 20, "symbols": 4, "max_len": 64}


def _gram_figures(quick: bool) -> dict[str, object]:
    """The learner's float64 Gram accumulation vs one float64 matmul of the same shape.

    The learner (solve.py) accumulates G = Σ_batches XᵀX over dense row batches of at most
    BATCH_ENTRIES numbers, in numpy float64; the ceiling is one numpy float64 matmul XᵀX
    of the whole (rows × columns) matrix. Both count 2·rows·columns² FLOPs and are timed
    interleaved in the same run (best of the rounds).
    """
    import numpy as np

    shape = dict(LEARNER_GRAM_SHAPE)
    if quick:
        shape["rows"] = 8192
    rows, n, batch = shape["rows"], shape["columns"], shape["batch"]
    X = np.random.default_rng(0).standard_normal((rows, n))
    batches = [X[i : i + batch] for i in range(0, rows, batch)]

    def accumulate() -> np.ndarray:
        G = np.zeros((n, n))
        for part in batches:
            G += part.T @ part
        return G

    times = side_by_side({"gram": accumulate, "gemm": lambda: X.T @ X},
                          torch.device("cpu"), 3 if quick else 6, budget_s=5 if quick else 20,
                          hard_s=10 if quick else 40)
    flops = 2.0 * rows * n * n
    return {
        "learner_gram_gflops": flops / times["gram"] / 1e9,
        "learner_gemm_fp64_gflops": flops / times["gemm"] / 1e9,
        "learner_gram_fraction_of_gemm_peak": times["gemm"] / times["gram"],
        "learner_gram_shape": shape,
    }


def _learn_seconds(shape: dict[str, int]) -> dict[str, object]:
    """Wall time of the default `learn` on a compiled random automaton (exact domain,
    witness design, fit, minimise, certify, proof and cross-check)."""
    from lat.compiler import compile_source
    from lat.learner import learn

    model = compile_source(automaton_source(shape["states"], shape["symbols"], seed=1)).model
    started = time.perf_counter()
    result = learn(model, max_len=shape["max_len"])
    seconds = time.perf_counter() - started
    c, e = result.certificate, result.equivalence
    return {"seconds": seconds, "equivalent": result.equivalent,
            "identifiable": c.identifiable, "scope": c.scope, "proven": e.proven,
            "proven_up_to_length": e.up_to_length, "domain_dimension": c.domain_dimension,
            "heads": result.heads, "heads_before_minimising": result.fit.heads_before_minimising,
            "phases": result.seconds, "traces": result.traces, "d": model.d,
            "features_used": c.features_used, "features_total": c.features_total}


def learner_figures(quick: bool) -> dict[str, object]:
    """Learner figures: Gram throughput against the float64 matmul ceiling, the exact
    certificate's domain analysis (mod5x5), and the time to relearn a 64-state 4-symbol
    automaton — under `quick` a 20-state one, reported as `learn_20x4_*`."""
    from lat.api import shipped_program
    from lat.compiler import compile_source
    from lat.learner.domain import build_domain

    out = _gram_figures(quick)
    mod5x5 = compile_source(shipped_program("mod5x5.lat"), "mod5x5.lat").model
    started = time.perf_counter()
    build_domain(mod5x5, max_len=64, samples=2000, seed=0)
    out["exact_certificate_mod5x5_seconds"] = time.perf_counter() - started
    shape = LEARN_SHAPE_QUICK if quick else LEARN_SHAPE
    label = f"learn_{shape['states']}x{shape['symbols']}"
    learned = _learn_seconds(shape)
    out[f"{label}_seconds"] = learned.pop("seconds")
    out[f"{label}_equivalent"] = learned.pop("equivalent")
    out[f"exact_certificate_{shape['states']}x{shape['symbols']}_seconds"] = (
        learned["phases"]["domain_analysis"])
    out[f"{label}_details"] = {**shape, **learned}
    if not quick:  # minutes each: the benchmark machines, each in a fresh process
        out.update(machine_figures())
    return out


# -- machines ---------------------------------------------------------------------------------

MACHINE_PROGRAMS = {  # benchmarks/programs: (file, `learn` options as `lat learn` flags)
    "increment12": ("increment_msb12.lat", {"design_rounds": 2}),
    "copy": ("copy.lat", {"samples": 100, "max_len": 6, "design_rounds": 20,
                          "time_budget": 280.0, "memory_budget": 4 << 30}),
}


def machine_learn(name: str, workers: int = 1) -> dict[str, object]:
    """One `learn` of a benchmark machine (`MACHINE_PROGRAMS`), in this process: wall time,
    peak resident memory, heads against the compiled model's, artifact sizes, verdicts."""
    import resource
    import tempfile
    from pathlib import Path

    from lat.compiler import compile_source
    from lat.learner import learn
    from lat.learner.learn import LearnStopped, OverBudget

    file, options = MACHINE_PROGRAMS[name]
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "programs" / file
    compiled = compile_source(path.read_text(encoding="utf-8"), str(path)).model
    started = time.perf_counter()
    try:
        result = learn(compiled, workers=workers, **options)
    except (OverBudget, LearnStopped) as ended:  # a figure too: what the budget allowed
        return {"seconds": time.perf_counter() - started, "peak_rss_bytes": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss * 1024, "workers": workers, "options": options,
            "ended": str(ended), "report": getattr(ended, "report", None)}
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        compiled.save(Path(folder) / "compiled.safetensors")
        result.model.save(Path(folder) / "learned.safetensors")
        sizes = {kind: (Path(folder) / f"{kind}.safetensors").stat().st_size
                 for kind in ("compiled", "learned")}
    report = result.to_json()
    return {
        "seconds": seconds, "peak_rss_bytes": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss * 1024, "workers": workers, "options": options,
        "d": compiled.d, "heads": result.heads, "compiled_heads": compiled.heads,
        "heads_before_minimising": report["heads_before_minimising"],
        "compiled_artifact_bytes": sizes["compiled"], "learned_artifact_bytes": sizes["learned"],
        "equivalent": result.equivalent, "scope": result.certificate.scope,
        "identifiable": result.certificate.identifiable, "traces": result.traces,
        "design_rounds": report["design_rounds"], "stopped": report["stopped"],
        "stopped_in": report["stopped_in"], "phases": result.seconds,
        "fit_phases": result.fit.seconds if result.fit is not None else None,
        "estimate": report["estimate"],
    }


def machine_figures(names: tuple[str, ...] = tuple(MACHINE_PROGRAMS),
                    workers: tuple[int, ...] = (1,)) -> dict[str, object]:
    """`learn_<name>_s` and its details for each benchmark machine, each run in a fresh
    process (so that its peak memory is its own), at each worker count."""
    import json
    import subprocess
    import sys

    out: dict[str, object] = {}
    for name in names:
        for count in workers:
            child = subprocess.run(
                [sys.executable, "-c", "import json, sys; from lat.bench_learn import "
                 f"machine_learn; print(json.dumps(machine_learn({name!r}, {count})))"],
                capture_output=True, text=True, check=False)
            key = f"learn_{name}" + ("" if count == 1 else f"_workers{count}")
            if child.returncode != 0:  # say why, and go on with the other figures
                out[f"{key}_error"] = (child.stderr.strip().splitlines() or ["?"])[-1]
                continue
            details = json.loads(child.stdout.strip().splitlines()[-1])
            out[f"{key}_s"] = details["seconds"]
            out[f"{key}_peak_rss_bytes"] = details["peak_rss_bytes"]
            out[f"{key}_details"] = details
    return out
