"""The `lat` command's argument parser: every subcommand, its flags and their checks.

`lat.cli` maps each parsed command to its handler; this module imports nothing heavy, so
`lat --help` and `lat check` stay free of torch and numpy (docs/ARCHITECTURE.md, "The face").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lat.compiler.lower import DEFAULT_MAX_MEMORY
from lat.runtime.errors import DEFAULT_MAX_STEPS


def _experiment_names() -> tuple[str, ...]:
    """The names in `lat.experiments.EXPERIMENTS`, read from its source without importing
    it (it imports numpy); importing it is the fallback if the registry is not a literal."""
    import ast as python_ast
    from importlib.util import find_spec

    try:
        spec = find_spec("lat.experiments")
        tree = python_ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in tree.body:
            target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
            if getattr(target, "id", None) == "EXPERIMENTS" and isinstance(node.value,
                                                                         python_ast.Dict):
                return tuple(python_ast.literal_eval(key) for key in node.value.keys)
    except (AttributeError, OSError, SyntaxError, TypeError, ValueError):
        pass
    from lat.experiments import EXPERIMENTS

    return tuple(EXPERIMENTS)


EXPERIMENT_NAMES = _experiment_names()


def build_parser() -> argparse.ArgumentParser:
    """`lat`'s parser; `args.command` names the subcommand (`lat.cli.HANDLERS` runs it)."""
    parser = argparse.ArgumentParser(
        prog="lat",
        description="Compile .lat programs to linear-attention weights, run, verify and "
        "relearn them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text)

    def limits(p: argparse.ArgumentParser, steps: bool = True) -> None:
        p.add_argument("--max-memory", type=_size, default=DEFAULT_MAX_MEMORY, metavar="SIZE",
                       help="refuse a compile estimated to need more (default 2G; e.g. 512M, "
                       "64G)")
        if steps:
            p.add_argument("--max-steps", type=_positive, default=DEFAULT_MAX_STEPS,
                           metavar="N", help="most steps one run may take (default 100,000)")

    p = command("check", "parse and check a .lat file")
    p.add_argument("file")
    limits(p, steps=False)
    p.add_argument("--json", action="store_true")

    p = command("compile", "compile a declaration to an MHLA artifact")
    p.add_argument("file")
    p.add_argument("-o", "--output", help="artifact path (default: FILE stem + .safetensors)")
    p.add_argument("--name", help="declaration to compile when the file has several")
    p.add_argument("--program-in", choices=("weights", "context"), default="weights")
    p.add_argument("--minimise", action="store_true", help="compile the minimal DFA")
    p.add_argument("--embedding", choices=("onehot", "random"), default="onehot",
                   help="memory keys as one-hot or random unit vectors")
    p.add_argument("--dim", type=_positive, help="dimension of random key embeddings")
    p.add_argument("--seed", type=int, help="seed of random key embeddings (default 0)")
    limits(p, steps=False)
    p.add_argument("--json", action="store_true")

    p = command("run", "execute a program or artifact on one input")
    p.add_argument("file", help=".lat program or artifact")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--input", help="the input word ('' is the empty word; '-' reads it "
                       "from standard input)")
    given.add_argument("--input-file", metavar="FILE",
                       help="read the input word from FILE (one final line break dropped)")
    p.add_argument("--name")
    p.add_argument("--program-in", choices=("weights", "context"),
                   help="placement when FILE is a .lat program (default: weights)")
    p.add_argument("--program", help="a .lat program for a context-placement artifact")
    p.add_argument("--program-name", help="declaration in --program when it has several")
    p.add_argument("--reference", action="store_true",
                   help="recompute every output with the loop form of the definition")
    p.add_argument("--kernel", default="auto", metavar="FORM",
                   help="MHLA form: auto (picks by length and device), reference, parallel, "
                   "chunked, recurrent or fla")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--weights", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="weight format (the state is fp32 always)")
    limits(p)
    p.add_argument("--json", action="store_true")

    p = command("verify", "compare the compiled model with the interpreter")
    p.add_argument("file")
    p.add_argument("--name")
    p.add_argument("--program-in", choices=("weights", "context"), default="weights")
    p.add_argument("--max-len", type=_non_negative,
                   help="longest word checked (default 8; a machine's tape caps it)")
    p.add_argument("--samples", type=_positive,
                   help="random words when the domain has more (default 20,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input-file", metavar="FILE",
                   help="check these inputs instead, one per line ('-': standard input)")
    limits(p)
    p.add_argument("--json", action="store_true")

    p = command("trace", "record rollouts as (context, output) pairs")
    p.add_argument("file")
    p.add_argument("--name")
    p.add_argument("--program-in", choices=("weights", "context"), default="weights")
    p.add_argument("--samples", type=_positive, default=1000, help="number of rollouts")
    p.add_argument("--max-len", type=_non_negative, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    limits(p)
    p.add_argument("--json", action="store_true")

    p = command("learn", "relearn weights from traces by least squares")
    p.add_argument("file", nargs="?", help=".lat program or artifact to learn from")
    p.add_argument("--traces", help="learn from a traces file made by `lat trace`")
    p.add_argument("--program", metavar="FILE",
                   help="the program (or artifact) the traces came from: certify against it")
    p.add_argument("--name")
    p.add_argument("--program-in", choices=("weights", "context"), default="weights")
    p.add_argument("--samples", type=_positive, default=None,
                   help="random training words (default: the exact design where the domain "
                   "is exact, else 1000)")
    p.add_argument("--max-len", type=_non_negative, default=None,
                   help="longest random or design word (default 64); with --traces alone, "
                   "the domain bound, which may not exceed the recorded lengths")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive, default=1,
                   help="accumulate the Gram in N local processes (torch.distributed, gloo)")
    p.add_argument("--design", action="store_true",
                   help="choose training inputs whose features span the domain (explore, "
                   "target rare co-occurrences, pivoted selection)")
    p.add_argument("--compare-random", action="store_true",
                   help="with --design (implied): also count the random traces needed to "
                   "cover the same certification domain (samples-to-identifiability)")
    p.add_argument("--design-rounds", type=_non_negative, default=8,
                   help="rounds of data design on a sampled domain (default 8)")
    p.add_argument("--max-traces", type=_positive, default=None,
                   help="stop adding designed traces at this many")
    p.add_argument("--exact-budget", type=_positive, default=20_000,
                   help="enumerate at most this many inputs for an exact domain "
                   "(default 20,000)")
    p.add_argument("--no-exact", action="store_true",
                   help="certify on a sample even where an exact domain exists")
    p.add_argument("--time-budget", type=_seconds, default=None, metavar="SECONDS",
                   help="stop at this wall-clock time and report what was reached (the "
                   "exact analysis and the design rounds may use half of it each)")
    p.add_argument("--memory-budget", type=_size, default=None, metavar="SIZE",
                   help="refuse up front when the fit's estimate is over this (e.g. 512M, "
                   "4G), and stop the design before it (default: the memory available "
                   "when the run starts)")
    p.add_argument("--require", choices=("proven",),
                   help="exit 1 unless equivalence is proven on an exact domain")
    p.add_argument("--no-minimise", action="store_true",
                   help="keep Algorithm 1's heads (skip the fewest-heads search)")
    p.add_argument("-o", "--output", help="write the learned artifact here")
    p.add_argument("--json", action="store_true")

    p = command("inspect", "describe an artifact (or draw a program's graph)")
    p.add_argument("file")
    p.add_argument("--name")
    p.add_argument("--dot", action="store_true", help="print the state graph as DOT")
    p.add_argument("--plot", metavar="PNG", help="heatmaps of V_h and Q_h")
    limits(p, steps=False)
    p.add_argument("--json", action="store_true")

    p = command("decompile", "read a model's program off its behaviour and print it as .lat")
    p.add_argument("file", help="artifact (or .lat program) to decompile")
    p.add_argument("-o", "--output", help="write the .lat program here")
    p.add_argument("--against", metavar="FILE.lat", help="compare with this program")
    p.add_argument("--program", help="bind a context-placement artifact to this program first")
    p.add_argument("--samples", type=_positive, default=256,
                   help="random words read besides the exploration (automata)")
    p.add_argument("--max-len", type=_positive, default=64, help="their largest length")
    p.add_argument("--inputs", type=_positive, default=4096,
                   help="machines: input budget (every input up to the tape if it fits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")

    command("demo", "compile, run, verify and relearn a shipped program")

    p = command("experiment", "reproduce an experiment: JSON and PNG plots")
    p.add_argument("name", choices=sorted(EXPERIMENT_NAMES) + ["all", "report"],
                   help="an experiment, all of them, or `report DIR` (the README's Results "
                   "section from DIR's JSON files)")
    p.add_argument("folder", nargs="?", help="with `report`: the folder of JSON files")
    p.add_argument("--check", metavar="README",
                   help="with `report`: exit 1 when README's Results section differs")
    p.add_argument("--quick", action="store_true", help="the small setting (all in < 5 min)")
    p.add_argument("--out", default="experiments", help="folder for the JSON and PNGs")
    p.add_argument("--json", action="store_true")

    p = command("bench", "measure the runtime against this machine's matmul")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (< 60 s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _size(text: str) -> int:
    from lat.compiler.lower import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 2G, 64G)") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value
