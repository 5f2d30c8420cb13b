"""How compile, run, verify and learn scale with program size: benchmarks/results/scaling.json.

    python benchmarks/scaling.py [--quick] [--no-learn] [--out PATH]

Three families, three sizes each, the `.lat` text generated here:

- memories of 1,000 / 10,000 / 50,000 entries (key k<i> → one of 1,000 values, a default);
- random total automata of 100 / 1,000 / 10,000 states over 4 symbols (`lat.bench`'s
  generator, the rollout workload);
- the shipped binary increment machine with a tape of 8 / 16 / 32 cells (step bound = cells).

Each phase of each size runs in a fresh child process, so its peak RSS
(`resource.getrusage`, maxrss) is that phase's own: `*_peak_mb` with the imports (torch
alone is ~230 MB), `*_working_mb` above what the imports left. With `--repeat N` (default
2) every phase runs N times: the fastest time and the largest peak count.

- compile: parse, check, lower, save the artifact (`compile_source` with no --max-memory
  guard, then `CompiledModel.save`); seconds and artifact bytes;
- run: load the artifact and run one input in-process (the longest: a key, 64 symbols,
  an all-ones word that carries to the end), and `lat run ARTIFACT --input ...` end to
  end as a user types it (interpreter start-up and imports included; `cli_baseline_s` is
  the same for the 2-state parity program, the floor under it);
- verify: `api.verify` with its defaults (every key of a memory; up to 20,000 words of
  length ≤ 8, exhaustive or a labelled sample); the domain label is recorded;
- learn: `learn` with its defaults on smaller programs of each family (`LEARN_SIZES`:
  memories of 100 / 300 / 1,000 entries, automata of 16 / 32 / 64 states, the machine with
  4 / 8 / 12 cells), compiled in the child first; seconds, peak, heads against the
  compiled count, the certificate's scope and whether equivalence was proven.

Slopes are least-squares fits of log(cost) against log(size) over the three sizes: a
slope of 1 is linear. Timings are wall clock on whatever else the machine is doing: the
load average (`os.getloadavg`) before and after is stored beside them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"memory": (1_000, 10_000, 50_000), "automaton": (100, 1_000, 10_000),
         "machine": (8, 16, 32)}
QUICK_SIZES = {"memory": (1_000, 3_000, 10_000), "automaton": (100, 300, 1_000),
               "machine": (8, 12, 16)}
# `lat learn` (default options) on smaller programs of the same families: learning costs
# grow faster than compiling, and the sizes above would take hours
LEARN_SIZES = {"memory": (100, 300, 1_000), "automaton": (16, 32, 64), "machine": (4, 8, 12)}
QUICK_LEARN_SIZES = {"memory": (30, 100), "automaton": (8, 16), "machine": (4, 6)}
UNITS = {"memory": "entries", "automaton": "states", "machine": "tape cells"}
MEMORY_VALUES = 1_000
AUTOMATON_SYMBOLS = 4


def memory_source(entries: int) -> str:
    lines = [f"  k{i} -> v{(i * 7919) % MEMORY_VALUES}" for i in range(entries)]
    return "\n".join(["memory table {", *lines, "  default: none", "}"]) + "\n"


def automaton_source(states: int) -> str:
    from lat.bench import automaton_source as random_dfa

    return random_dfa(states, AUTOMATON_SYMBOLS) + "\n"


def machine_source(cells: int) -> str:
    return f"""machine increment {{
  tape: 0, 1, _
  blank: _
  states: carry, done
  start: carry
  halt: done
  bound: steps {cells}, tape {cells}
  carry 1 -> 0 R carry
  carry 0 -> 1 S done
  carry _ -> 1 S done
}}
"""


SOURCES = {"memory": memory_source, "automaton": automaton_source, "machine": machine_source}


def run_input(family: str, size: int) -> str:
    """The one input `run` times, as typed on the command line."""
    if family == "memory":
        return f"k{size // 2}"
    if family == "machine":
        return "1" * (size - 1)  # the carry runs to the last cell
    return " ".join(f"s{i % AUTOMATON_SYMBOLS}" for i in range(64))


# -- one phase, in a child process -------------------------------------------------------


def phase(name: str, family: str, size: int, folder: Path) -> dict[str, object]:
    """Measure one phase here (called in a child process) and return its figures."""
    program, artifact = folder / f"{family}{size}.lat", folder / f"{family}{size}.st"
    figures: dict[str, object] = {}
    from lat import api  # imports are not the phase's time (`cli_run_s` has them)
    from lat.compiler import compile_source

    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    if name == "compile":
        text = SOURCES[family](size)
        program.write_text(text)
        compilation = compile_source(text, str(program), max_memory=None)
        compilation.artifact.save(artifact)
        model = compilation.artifact
        figures.update(d=model.d, d_out=model.d_out, heads=model.heads,
                       sparse=bool(model.sparse), artifact_bytes=artifact.stat().st_size)
    elif name == "run":
        model = api.load_model(artifact)
        report = api.run(model, run_input(family, size), max_steps=None)
        figures.update(output=str(report["output"]), margin_resolved=report["margin_resolved"],
                       steps=report["steps"])
    elif name == "learn":  # its own, smaller sizes: compiled here, then learned
        from lat.learner import learn

        model = compile_source(SOURCES[family](size), f"{family}{size}.lat",
                               max_memory=None).model
        imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        started = time.perf_counter()
        result = learn(model)
        certificate, equivalence = result.certificate, result.equivalence
        figures.update(d=model.d, compiled_heads=model.heads, heads=result.heads,
                       heads_before_minimising=result.fit.heads_before_minimising,
                       traces=result.traces, scope=certificate.scope,
                       identifiable=certificate.identifiable, equivalent=result.equivalent,
                       proven=bool(equivalence and equivalence.proven),
                       phases={k: round(v, 3) for k, v in result.seconds.items()})
    elif name == "verify":
        compilation = compile_source(program.read_text(), str(program), max_memory=None)
        started = time.perf_counter()  # verify only, not its compile
        report = api.verify(compilation, max_steps=None)
        figures.update(checked=report.checked, mismatches=report.mismatches,
                       unresolved=report.unresolved, domain=report.domain)
    figures["seconds"] = time.perf_counter() - started
    figures["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    figures["working_bytes"] = figures["peak_rss_bytes"] - imported  # above the imports
    return figures


def child(name: str, family: str, size: int, folder: Path, repeat: int = 1
          ) -> dict[str, object]:
    """`phase` in a fresh interpreter (its own peak RSS), `repeat` times: the fastest
    run's seconds, the largest peak."""
    best: dict[str, object] = {}
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--phase", name, family, str(size), str(folder)],
            capture_output=True, text=True, check=False)
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        if best:
            figures["seconds"] = min(figures["seconds"], best["seconds"])
            for key in ("peak_rss_bytes", "working_bytes"):
                figures[key] = max(figures[key], best[key])
        best = figures
    return best


def cli_run_seconds(family: str, size: int, folder: Path) -> float | None:
    """`lat run ARTIFACT --input ...` end to end, interpreter start-up included."""
    return _lat_run(folder / f"{family}{size}.st", run_input(family, size))


def _lat_run(target: Path, text: str) -> float | None:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lat", "run", str(target), "--input", text,
                          "--max-steps", "1000000000"],
                         capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    return seconds if out.returncode == 0 else None


def cli_baseline_seconds() -> float | None:
    """`lat run programs/parity.lat --input 0110`: start-up, imports and a tiny compile,
    the floor under every `cli_run_s`."""
    return _lat_run(ROOT / "programs" / "parity.lat", "0110")


# -- the whole table -----------------------------------------------------------------------


def slope(sizes: list[int], costs: list[float | None]) -> float | None:
    """Least-squares slope of log(cost) on log(size); None with fewer than two points."""
    points = [(math.log(s), math.log(c)) for s, c in zip(sizes, costs, strict=True)
              if c is not None and c > 0]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else None


METRICS = ("compile_s", "compile_peak_mb", "compile_working_mb", "artifact_mb", "run_s",
           "run_peak_mb", "cli_run_s", "verify_s", "verify_peak_mb", "verify_working_mb")


def measure(sizes: dict[str, tuple[int, ...]], log=print, repeat: int = 1,
            learn_sizes: dict[str, tuple[int, ...]] | None = None) -> dict[str, object]:
    families: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for family, points in sizes.items():
            rows = []
            for size in points:
                compiled = child("compile", family, size, folder, repeat)
                ok = "error" not in compiled
                ran = child("run", family, size, folder, repeat) if ok else {}
                cli = min((cli_run_seconds(family, size, folder) or math.inf
                           for _ in range(repeat)), default=math.inf) if ok else math.inf
                verified = child("verify", family, size, folder, repeat) if ok else {}
                mb = 1 / (1 << 20)
                row = {
                    "size": size,
                    "compile_s": compiled.get("seconds"),
                    "compile_peak_mb": _times(compiled.get("peak_rss_bytes"), mb),
                    "compile_working_mb": _times(compiled.get("working_bytes"), mb),
                    "artifact_mb": _times(compiled.get("artifact_bytes"), mb),
                    "d": compiled.get("d"), "d_out": compiled.get("d_out"),
                    "sparse": compiled.get("sparse"),
                    "run_s": ran.get("seconds"), "run_peak_mb": _times(ran.get("peak_rss_bytes"),
                                                                       mb),
                    "run_output": ran.get("output"),
                    "cli_run_s": cli if math.isfinite(cli) else None,
                    "verify_s": verified.get("seconds"),
                    "verify_peak_mb": _times(verified.get("peak_rss_bytes"), mb),
                    "verify_working_mb": _times(verified.get("working_bytes"), mb),
                    "verify_domain": verified.get("domain"),
                    "verify_checked": verified.get("checked"),
                    "verify_ok": (verified.get("mismatches") == 0
                                  and verified.get("unresolved") == 0) if verified else None,
                    "errors": [p.get("error") for p in (compiled, ran, verified) if "error" in p],
                }
                log(f"{family} {size:>6} {UNITS[family]}: " + ", ".join(
                    f"{k} {_short(row[k])}" for k in (*METRICS, "verify_domain")))
                rows.append(row)
            xs = [row["size"] for row in rows]
            families[family] = {
                "unit": UNITS[family], "points": rows,
                "slopes": {metric: _round(slope(xs, [row[metric] for row in rows]))
                           for metric in METRICS},
            }
            if learn_sizes:
                families[family].update(learn_table(family, learn_sizes[family], folder,
                                                    log, repeat))
    return families


def learn_table(family: str, points: tuple[int, ...], folder: Path, log, repeat: int
                ) -> dict[str, object]:
    """`learn` (default options) at each size: time, peak memory, heads and verdicts."""
    rows = []
    for size in points:
        learned = child("learn", family, size, folder, repeat)
        mb = 1 / (1 << 20)
        row = {"size": size, "learn_s": learned.get("seconds"),
               "learn_peak_mb": _times(learned.get("peak_rss_bytes"), mb),
               "learn_working_mb": _times(learned.get("working_bytes"), mb),
               **{k: learned.get(k) for k in ("d", "compiled_heads", "heads",
                                              "heads_before_minimising", "traces", "scope",
                                              "identifiable", "equivalent", "proven",
                                              "phases")},
               "errors": [learned["error"]] if "error" in learned else []}
        log(f"{family} {size:>6} {UNITS[family]}: learn {_short(row['learn_s'])} s, "
            f"peak {_short(row['learn_peak_mb'])} MB, heads {row['heads']}, "
            f"{row['scope']}, proven {row['proven']}")
        rows.append(row)
    xs = [row["size"] for row in rows]
    return {"learn_points": rows,
            "learn_slopes": {metric: _round(slope(xs, [row[metric] for row in rows]))
                             for metric in ("learn_s", "learn_peak_mb", "learn_working_mb")}}


def _times(value: object, factor: float) -> float | None:
    return None if value is None else float(value) * factor


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--phase"]:
        name, family, size, folder = argv[1:5]
        print(json.dumps(phase(name, family, int(size), Path(folder))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each phase: the fastest counts (default 2)")
    parser.add_argument("--no-learn", action="store_true",
                        help="skip the learn columns (minutes)")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "scaling.json")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    started = time.perf_counter()
    families = measure(QUICK_SIZES if args.quick else SIZES,
                       log=lambda line: print(line, file=sys.stderr, flush=True),
                       repeat=max(1, args.repeat),
                       learn_sizes=None if args.no_learn else
                       QUICK_LEARN_SIZES if args.quick else LEARN_SIZES)
    from lat.bench import cpu_name

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cli_baseline_s": cli_baseline_seconds(),
        "seconds": round(time.perf_counter() - started, 1),
        "quick": args.quick,
        "repeat": max(1, args.repeat),
        "families": families,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
