"""`lat experiment NAME`: the paper's experiments (Yau et al., arXiv 2410.10101,
Sec. 4 and App. G) and our own, each a function returning a JSON dict.

Every experiment module exposes `run(quick: bool, out: Path, scale: float = 1.0) -> dict`:
`quick` picks the small setting (the whole suite in well under five minutes on two CPU
cores), `scale` < 1 shrinks it further (the tests use it), `out` receives the PNG plots.
`run_experiment` writes `<out>/<name>.json` with the returned figures and the paths of the
PNGs it wrote; numbers are measured by real regressions and trainings, never hard-coded.

    EXPERIMENTS        name -> run function
    run_experiment     run one by name, write its JSON, return the dict
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["EXPERIMENTS", "UnknownExperiment", "run_experiment", "jsonable", "save_plot"]


class UnknownExperiment(ValueError):
    """An experiment name that is not in EXPERIMENTS."""


def _lazy(module: str) -> Callable[..., dict]:
    def runner(quick: bool = False, out: Path = Path("."), scale: float = 1.0) -> dict:
        import importlib

        return importlib.import_module(f"lat.experiments.{module}").run(
            quick=quick, out=Path(out), scale=scale)

    runner.__name__ = module
    return runner


EXPERIMENTS: dict[str, Callable[..., dict]] = {
    "kv-certificate": _lazy("kv_certificate"),
    "random-mhla": _lazy("random_mhla"),
    "formal-languages": _lazy("formal_languages"),
    "universal-automaton": _lazy("universal_automaton"),
    "icl-regression": _lazy("icl_regression"),
    "token-selection": _lazy("token_selection"),
}


def run_experiment(name: str, quick: bool = False, out: Path | str = Path("experiments"),
                   scale: float = 1.0) -> dict:
    """Run experiment `name`, write `<out>/<name>.json` (and its PNGs), return the dict."""
    if name not in EXPERIMENTS:
        raise UnknownExperiment(
            f"unknown experiment '{name}' (choose from {', '.join(sorted(EXPERIMENTS))})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    load_start = os.getloadavg()[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: one thread is faster and steadier under load
    blas_threads = _set_blas_threads(1)  # numpy's BLAS likewise (its solves are small)
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        result = EXPERIMENTS[name](quick=quick, out=out, scale=scale)
    finally:
        torch.set_num_threads(threads)
        if blas_threads is not None:
            _set_blas_threads(blas_threads)
    result = jsonable({"experiment": name, "quick": quick,
                       "size": "quick" if quick else "full", "scale": scale, **result,
                       "seconds_total": round(time.perf_counter() - started, 3),
                       "cpu_seconds": round(time.process_time() - cpu_started, 3),
                       "threads": {"torch": 1, "blas": 1 if blas_threads is not None
                                   else "unchanged"},
                       "machine": machine(load_start)})
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _set_blas_threads(count: int) -> int | None:
    """Set the thread count of the OpenBLAS numpy ships with (scipy-openblas); return the
    previous count, or None (and change nothing) for another BLAS. A multi-threaded BLAS
    on a shared 2-core machine spins while the other core is busy: small solves then run
    many times slower than on one thread."""
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*.so*"))
    for path in libs:
        lib = ctypes.CDLL(path)  # already loaded by numpy: the same library, not a copy
        get = getattr(lib, "scipy_openblas_get_num_threads64_", None)
        put = getattr(lib, "scipy_openblas_set_num_threads64_", None)
        if get is not None and put is not None:
            previous = int(get())
            put(ctypes.c_int(count))
            return previous
    return None


def machine(load_start: float) -> dict:
    """Where and when a run happened: CPU model, cores, load average at start and end."""
    import torch

    from lat.bench import cpu_name

    cpu = cpu_name()

    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": None,
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "load_average_start": round(load_start, 2),
            "load_average_end": round(os.getloadavg()[0], 2),
            "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC")}


def jsonable(value: object) -> object:
    """Numpy scalars/arrays to Python; NaN/inf to None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save_plot(fig, out: Path, filename: str) -> str:  # noqa: ANN001
    """Save a matplotlib figure as PNG under `out`, close it, return the file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / filename, dpi=110)
    plt.close(fig)
    return filename


def pyplot():  # noqa: ANN201
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
