"""Run `lat bench` and keep the figures: benchmarks/results/<machine>.json.

    python benchmarks/run.py [--quick] [--device auto|cpu|cuda]

The file name is derived from the machine (CPU model and core count, GPU name when the
run used one); the JSON holds the bench object, its `machine` block and the date. The
README quotes these files, each with the machine it came from.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lat.bench import run_bench  # noqa: E402


def machine_slug(result: dict) -> str:
    machine = result["machine"]
    name = str(machine.get("gpu") or f"{machine['cpu']}-{machine['cores']}c")
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "machine"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    result = run_bench(quick=args.quick, device=args.device)
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = args.out / f"{machine_slug(result)}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
