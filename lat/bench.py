"""`lat bench`: the runtime measured against the machine's own limits, side by side.

Everything in the returned object is measured in one run, interleaved where two things
are compared (each figure is the best of its repetitions, so a noisy neighbour costs
repetitions, not ratios):

- `gemm_gflops`: a 2048×2048 fp32 torch matmul — the machine's dense peak;
- `small_gemm_gflops`: fp32 torch matmuls on the MHLA's own operand shapes (inner
  dimension d: the query projection of one block, and a chunk's queries times a d×d
  state), the best of them — the realistic ceiling for this workload on a CPU;
- prefill throughput of `forms.mhla` (fp32 and bf16 weights) at B×T×H×d, its FLOPs
  per token counted analytically (`prefill_flops`), and ratios against the reference
  loop (at a short T the loop can afford, both on one thread) and against the
  hand-written chunked baseline `forms.naive_chunked` (default threads);
- `decode_us_per_token`: one recurrent step at batch 1 (a CUDA graph on a GPU);
- `rollout_symbols_per_s`: batched rollout of a compiled 20-state automaton over 256
  words of 1,000 symbols;
- `machine_us_per_step`, `long_input_symbols_per_s`: single runs (see `bench_runs`).

FLOPs per token (multiply-add = 2), chunk length C:
  fused shared-state form   4·H·d² + 4·H·C·d + 2·H·d·d_out + 2·d²
  (queries 2Hd², state × queries 2Hd², masked chunk scores and their sum 4HCd,
  value maps 2H·d·d_out, the state update 2d²)
  naive per-head baseline   H·(2d² + 6·d·d_out + 2·C·(d + d_out))
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from lat.runtime.device import GraphedDecoder, resolve_device, single_thread, synchronize
from lat.runtime.forms import (
    RecurrentState,
    choose_block,
    choose_chunk,
    fla_available,
    mhla,
    mhla_reference,
    naive_chunked,
    recurrent_step,
)

DEFAULT_SHAPE = {"B": 8, "T": 4096, "H": 8, "d": 64}
ROLLOUT_SHAPE = {"states": 20, "symbols": 4, "words": 256, "length": 1000}
REFERENCE_T = 64  # the loop form is O(T²·H) Python steps: measured at a T it can afford


def prefill_flops(H: int, d: int, d_out: int, chunk: int) -> int:
    """FLOPs per token of the fused chunked form (see the module docstring)."""
    return 4 * H * d * d + 4 * H * chunk * d + 2 * H * d * d_out + 2 * d * d


def naive_flops(H: int, d: int, d_out: int, chunk: int = 64) -> int:
    """FLOPs per token of the per-head chunked baseline."""
    return H * (2 * d * d + 6 * d * d_out + 2 * chunk * (d + d_out))


def _best(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up (seconds)."""
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def side_by_side(fns: dict[str, Callable[[], object]], device: torch.device,
                  repeats: int, budget_s: float = float("inf"), min_rounds: int = 2,
                  hard_s: float = float("inf")) -> dict[str, float]:
    """Best times of several functions measured in interleaved rounds.

    Each round runs every function once, so a disturbance (another process on a shared
    core) hits rounds, not one contender. The first round doubles as warm-up (a best-of
    discards it). Rounds stop after `repeats`; after `min_rounds` once `budget_s` is
    spent; after any complete round once `hard_s` is (a machine so busy that one round
    takes that long gives noisy figures however long it is measured).
    """
    best = dict.fromkeys(fns, float("inf"))
    started = time.perf_counter()
    for round_ in range(max(repeats, min_rounds)):
        elapsed = time.perf_counter() - started
        if round_ and (elapsed > hard_s or (round_ >= min_rounds and elapsed > budget_s)):
            break
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, object]:
    """What the figures came from."""
    info: dict[str, object] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "system": platform.system(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def automaton_source(states: int, symbols: int, seed: int = 0) -> str:
    """A random total DFA in the DSL (the rollout workload)."""
    rng = random.Random(seed)
    names = [f"q{i}" for i in range(states)]
    alphabet = [f"s{j}" for j in range(symbols)]
    lines = [
        "automaton bench {",
        "  alphabet: " + ", ".join(alphabet),
        "  states: " + ", ".join(names),
        "  start: q0",
        "  accept: " + ", ".join(names[: max(1, states // 2)]),
    ]
    lines += [f"  {q} {a} -> {rng.choice(names)}" for q in names for a in alphabet]
    lines.append("}")
    return "\n".join(lines)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                   thread_name_prefix="lat-bench")
    return _POOL


def _ceilings(device: torch.device, B: int, T: int, H: int, d: int
              ) -> tuple[dict[str, Callable[[], object]], dict[str, float]]:
    """The machine's limits as timed functions, with the FLOPs of one call each.

    gemm: a 2048×2048 fp32 matmul. The small GEMMs are the chunked form's own matmuls
    with inner dimension d, at the shapes and in the blocks it runs them over a whole
    B×T×d input: each block's query projection (B·L × d) @ (d × H·d), and each chunk's
    queries times its d×d state, batched (B·L/C × C·H × d) @ (d × d) — each with
    torch's default threads and split over worker threads; the best is the ceiling.
    """
    n = 2048
    chunk = choose_chunk(B, T, H, d, device)
    L = choose_block(B, T, H, d, chunk, device)
    blocks = max(1, T // L)
    a, b, c = (torch.randn(n, n, device=device) for _ in range(3))
    X = torch.randn(blocks, B * L, d, device=device)
    W = torch.randn(d, H * d, device=device)
    XW = torch.empty(B * L, H * d, device=device)
    P = torch.randn(blocks, B * L // chunk, chunk * H, d, device=device)
    S = torch.randn(blocks, B * L // chunk, d, d, device=device)
    U = torch.empty(B * L // chunk, chunk * H, d, device=device)

    def projection(blocks_: range = range(blocks)) -> None:
        out = torch.empty_like(XW)
        for i in blocks_:
            torch.matmul(X[i], W, out=out)

    def state(blocks_: range = range(blocks)) -> None:
        out = torch.empty_like(U)
        for i in blocks_:
            torch.bmm(P[i], S[i], out=out)

    workers = min(os.cpu_count() or 1, blocks)
    pool = _pool() if device.type == "cpu" else None

    def threaded(fn: Callable[[range], None]) -> Callable[[], None]:
        """The same matmuls split over worker threads, one intra-op thread each (the
        way the chunked form runs them): a ceiling for that strategy too."""
        def run() -> None:
            assert pool is not None
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                parts = [range(w, blocks, workers) for w in range(workers)]
                for future in [pool.submit(fn, part) for part in parts]:
                    future.result()
            finally:
                torch.set_num_threads(threads)
        return run

    fns: dict[str, Callable[[], object]] = {
        "gemm": lambda: torch.matmul(a, b, out=c),
        "query_projection": projection,
        "state_times_queries": state,
    }
    if pool is not None and workers > 1:
        fns["query_projection_threads"] = threaded(projection)
        fns["state_times_queries_threads"] = threaded(state)
    flops = {
        "gemm": 2.0 * n**3,
        "query_projection": 2.0 * blocks * B * L * d * H * d,
        "state_times_queries": 2.0 * blocks * B * L * H * d * d,
    }
    flops["query_projection_threads"] = flops["query_projection"]
    flops["state_times_queries_threads"] = flops["state_times_queries"]
    return fns, {name: flops[name] for name in fns}


def _decode_us(device: torch.device, H: int, d: int, steps: int) -> float:
    generator = torch.Generator().manual_seed(1)
    V = (torch.randn(H, d, d, generator=generator) / d).to(device)
    Q = (torch.randn(H, d, d, generator=generator) / d).to(device)
    Z = torch.randn(steps, 1, d, generator=generator).to(device)
    state = RecurrentState.empty(1, V, device=device)
    if device.type == "cuda":
        graphed = GraphedDecoder(V, Q, state)

        def loop() -> None:
            for t in range(steps):
                graphed.step(Z[t])
    else:
        def loop() -> None:
            for t in range(steps):
                recurrent_step(state, Z[t], V, Q)

    with single_thread(device.type == "cpu"), torch.inference_mode():
        seconds = _best(loop, device, 3)
    return seconds / steps * 1e6


def _rollout(device: torch.device, repeats: int) -> dict[str, object]:
    from lat.compiler import compile_source
    from lat.runtime.execute import rollout

    shape = ROLLOUT_SHAPE
    model = compile_source(automaton_source(shape["states"], shape["symbols"])).model
    rng = random.Random(2)
    alphabet = model.interface.input_alphabet
    words = [tuple(rng.choice(alphabet) for _ in range(shape["length"]))
             for _ in range(shape["words"])]
    seconds = _best(lambda: rollout(model, words, device=device), device, repeats)
    return {"symbols_per_s": shape["words"] * shape["length"] / seconds,
            "d": model.d, "d_out": model.d_out, "heads": model.heads}


def _fla_prefill(Z: torch.Tensor, V: torch.Tensor, Q: torch.Tensor, device: torch.device,
                 repeats: int) -> float | None:
    """fla's own chunk kernel on the same shapes (bf16), if installed: tokens/s."""
    if device.type != "cuda" or not fla_available():
        return None
    seconds = _best(lambda: mhla(Z, V, Q, kernel="fla", weights="bf16"), device, repeats)
    return Z.shape[0] * Z.shape[1] / seconds


def _bandwidth(device: torch.device, repeats: int) -> float:
    """Device-to-device copy bandwidth (GB/s, read + write): the memory limit."""
    n = 1 << 27 if device.type == "cuda" else 1 << 24
    src = torch.empty(n, device=device)
    dst = torch.empty(n, device=device)
    seconds = _best(lambda: dst.copy_(src), device, repeats)
    return 2 * n * 4 / seconds / 1e9


def _gpu_figures(device: torch.device, B: int, H: int, d: int, d_out: int, repeats: int,
                 fla_tokens: float | None, ours_bf16: float) -> dict[str, object]:
    """Against fla on the default shape, and memory bandwidth at T = 16k.

    The bandwidth a prefill *must* use is its tokens in (bf16) and outputs out (fp32);
    the fraction compares that traffic per second with a device copy's.
    """
    copy = _bandwidth(device, repeats)
    T_long = 16384
    generator = torch.Generator().manual_seed(3)
    Z = torch.randn(B, T_long, d, generator=generator).to(device)
    V = (torch.randn(H, d_out, d, generator=generator) / d).to(device)
    Q = (torch.randn(H, d, d, generator=generator) / d).to(device)
    with torch.inference_mode():
        seconds = _best(lambda: mhla(Z, V, Q, kernel="chunked", weights="bf16"), device,
                        repeats)
        fla_long = _fla_prefill(Z, V, Q, device, repeats)
    moved = B * T_long * (d * 2 + d_out * 4)
    return {
        "copy_bandwidth_gbps": copy,
        "long_T": T_long,
        "prefill_tokens_per_s_bf16_long": B * T_long / seconds,
        "prefill_bandwidth_fraction_long": moved / seconds / 1e9 / copy,
        "fla_prefill_tokens_per_s": fla_tokens,
        "prefill_vs_fla": ours_bf16 / fla_tokens if fla_tokens else None,
        "fla_prefill_tokens_per_s_long": fla_long,
    }


def summary_rows(result: dict[str, object]) -> list[tuple[str, str]]:
    """(figure, value) pairs for a human-readable table (`lat bench` without --json)."""

    def number(value: object, digits: int = 3) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    keys = (
        "device", "gemm_gflops", "small_gemm_gflops", "prefill_tokens_per_s",
        "prefill_flops_per_token", "prefill_fraction_of_gemm_peak",
        "prefill_fraction_of_small_gemm", "speedup_vs_reference_loop",
        "speedup_vs_naive_chunked", "prefill_tokens_per_s_bf16", "decode_us_per_token",
        "rollout_symbols_per_s", "machine_us_per_step", "long_input_symbols_per_s",
        "prefill_vs_fla", "prefill_bandwidth_fraction_long",
    )
    rows = [(key, number(result[key])) for key in keys if key in result]
    rows.append(("shape (B, T, H, d)",
                 f"{result['B']}, {result['T']}, {result['H']}, {result['d']}"))
    return rows


def run_bench(quick: bool = False, device: str = "auto",
              shape: dict[str, int] | None = None) -> dict[str, object]:
    """Measure everything side by side; return the JSON object `lat bench --json` prints.

    quick: fewer repetitions and a 10 s budget for the interleaved rounds (the same
    shapes; ~10 s on a quiet 2-core CPU, under a minute when its cores are shared).
    shape: override B, T, H, d (tests use a tiny one).
    """
    target = resolve_device(device)
    dims = {**DEFAULT_SHAPE, **(shape or {})}
    B, T, H, d = dims["B"], dims["T"], dims["H"], dims["d"]
    d_out = d
    repeats = 3 if quick else 10
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    Z = torch.randn(B, T, d, generator=generator).to(target)
    V = (torch.randn(H, d_out, d, generator=generator) / d).to(target)
    Q = (torch.randn(H, d, d, generator=generator) / d).to(target)
    chunk = choose_chunk(B, T, H, d, target)
    chunk_bf16 = choose_chunk(B, T, H, d, target, torch.bfloat16)
    flops = prefill_flops(H, d, d_out, chunk)

    with torch.inference_mode():
        ceilings, ceiling_flops = _ceilings(target, B, T, H, d)
        contenders: dict[str, Callable[[], object]] = {
            **ceilings,
            "fused": lambda: mhla(Z, V, Q, kernel="auto"),
            "fused_bf16": lambda: mhla(Z, V, Q, kernel="auto", weights="bf16"),
            "naive": lambda: naive_chunked(Z, V, Q),
        }
        times = side_by_side(contenders, target, repeats + 1, budget_s=10 if quick else 90,
                              hard_s=15 if quick else 240)
        rates = {name: ceiling_flops[name] / times[name] / 1e9 for name in ceilings}
        gemm = rates.pop("gemm")
        small = rates
        small_best = max(small.values())
        Zr = Z[:, :REFERENCE_T].contiguous()
        # The loop form is serial by definition: both sides of this ratio run on one
        # thread (tiny ops gain nothing from a team and suffer most from a shared core).
        with single_thread(target.type == "cpu"):
            short = side_by_side({
                "reference": lambda: mhla_reference(Zr, V, Q),
                "fused": lambda: mhla(Zr, V, Q, kernel="auto"),
            }, target, 3, budget_s=5 if quick else 20, hard_s=10 if quick else 60)
        fla_tokens = _fla_prefill(Z, V, Q, target, repeats)

    tokens = B * T / times["fused"]
    result: dict[str, object] = {
        "device": str(target),
        "B": B, "T": T, "H": H, "d": d, "d_out": d_out,
        "chunk": chunk,
        "gemm_gflops": gemm,
        "small_gemm_gflops": small_best,
        "small_gemm_shapes_gflops": small,
        "prefill_tokens_per_s": tokens,
        "prefill_flops_per_token": flops,
        "prefill_gflops": tokens * flops / 1e9,
        "prefill_fraction_of_gemm_peak": tokens * flops / 1e9 / gemm,
        "prefill_fraction_of_small_gemm": tokens * flops / 1e9 / small_best,
        "speedup_vs_reference_loop": short["reference"] / short["fused"],
        "reference_shape": {"B": B, "T": REFERENCE_T, "H": H, "d": d},
        "speedup_vs_naive_chunked": times["naive"] / times["fused"],
        "naive_chunked_tokens_per_s": B * T / times["naive"],
        "naive_flops_per_token": naive_flops(H, d, d_out),
        "prefill_tokens_per_s_bf16": B * T / times["fused_bf16"],
        "chunk_bf16": chunk_bf16,
        "speedup_vs_naive_chunked_bf16": times["naive"] / times["fused_bf16"],
        "decode_us_per_token": _decode_us(target, H, d, 500 if quick else 2000),
        "decode_shape": {"B": 1, "H": H, "d": d, "d_out": d_out},
    }
    rolled = _rollout(target, 1 if quick else 3)
    result["rollout_symbols_per_s"] = rolled["symbols_per_s"]
    result["rollout_shape"] = {**ROLLOUT_SHAPE, "d": rolled["d"], "d_out": rolled["d_out"]}
    from lat.bench_runs import single_run_figures

    result.update(single_run_figures(quick))
    if target.type == "cuda":
        result.update(_gpu_figures(target, B, H, d, d_out, repeats, fla_tokens,
                                   result["prefill_tokens_per_s_bf16"]))
    from lat.bench_learn import learner_figures

    result.update(learner_figures(quick))
    result["machine"] = machine_info(target)
    result["quick"] = quick
    result["seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m lat.bench [--quick] [--device D]`: print the JSON object."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="lat bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    json.dump(run_bench(quick=args.quick, device=args.device), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
