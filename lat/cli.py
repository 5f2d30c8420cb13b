"""The `lat` command. Every user mistake ends in one located line and a non-zero exit.

Exit codes: 0 success; 1 a run-time failure (bad input word, missing, corrupt or edited
artifact, an output path that cannot be written, a --max-steps limit, verification mismatch,
non-equivalent learning); 2 a program error (`FILE:LINE:COL`, a --max-memory refusal
included) or a usage error; 130 interrupted (Ctrl-C). User text is printed literally.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from lat.compiler.errors import LatError, one_line
from lat.compiler.ir import CheckedAutomaton
from lat.compiler.lower import DEFAULT_MAX_MEMORY
from lat.progress import progress_bar
from lat.runtime.errors import (
    DEFAULT_MAX_STEPS,
    ArtifactError,
    InputError,
    PrecisionError,
    ResourceError,
)
from lat.runtime.storage import atomic_write, check_output_path

if TYPE_CHECKING:
    from lat.runtime.model import CompiledModel


class _Lazy(ModuleType):
    """A module imported on first attribute use: `lat check` and `lat --help` never load
    torch or numpy (measured with `python -X importtime`, see the README)."""

    def __init__(self, name: str):
        super().__init__(name)

    def __getattr__(self, attribute: str) -> object:
        return getattr(importlib.import_module(self.__name__), attribute)


api = _Lazy("lat.api")
np = _Lazy("numpy")

# User text (inputs, symbols, values, names, paths) is never read as rich markup or emoji
# codes: every line that holds some is a `Text` (or `markup=False`), see `_say`.
out = Console(highlight=False, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)  # one message, one line


def _say(*parts: str | tuple[str, str]) -> None:
    """Print one line to stdout, literally: each part is text, or (text, style).

    Control characters are shown escaped (`one_line`), so a value holding a newline or a
    terminal escape sequence can neither split the line nor reach the terminal raw."""
    line = Text()
    for part in parts:
        if isinstance(part, tuple):
            line.append(one_line(part[0]), style=part[1])
        else:
            line.append(one_line(part))
    out.print(line, soft_wrap=True)


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _warnings(compilation: api.Compilation) -> None:
    for warning in compilation.warnings:
        err.print(Text(str(warning)))


def model_summary(model: CompiledModel) -> dict[str, object]:
    """H, d, d_out, parameters and margin: what every compile and inspect reports."""
    return {
        "program": model.interface.program,
        "kind": model.interface.kind,
        "origin": model.info.get("origin", "unknown"),
        "heads": model.heads,
        "d": model.d,
        "d_out": model.d_out,
        "parameters": model.parameters,
        "dtype": str(model.V.dtype).replace("torch.", ""),
        "decode_margin": model.info.get("decode_margin"),
        "sha256": model.sha256(),
        **_certificate_summary(model),
    }


def _certificate_summary(model: CompiledModel) -> dict[str, object]:
    """What a learned artifact's certificate covers, in words (nothing for compiled ones)."""
    certified = model.info.get("certified")
    if model.info.get("origin") != "learned" or not isinstance(certified, dict):
        return {}
    equivalence = model.info.get("equivalence") or {}
    return {
        "certificate": f"{certified.get('scope')}: {certified.get('domain')}",
        "equivalence": str(equivalence.get("statement", "")),
        "certified": bool(certified.get("proven")),
        **({} if certified.get("proven") else {"not certified because": certified.get("reason")}),
    }


def _summary_table(summary: dict[str, object], title: str) -> Table:
    table = Table(title=Text(one_line(title)), show_header=False, title_justify="left")
    for key, value in summary.items():
        table.add_row(Text(one_line(key)), Text(one_line(str(value))))
    return table


# -- commands -------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from lat.compiler import check_file  # not lat.api: `lat check` stays free of torch
    from lat.compiler.lower import estimate

    checked = check_file(args.file, max_memory=args.max_memory)
    for warning in checked.warnings:
        err.print(Text(str(warning)))
    names = [{"name": d.name, "kind": type(d).__name__.replace("Checked", "").lower(),
              "estimate": estimate(d).to_json()}  # weights placement: sizes and bytes
             for d in checked.declarations]
    if args.json:
        _print_json({"file": args.file, "ok": True, "declarations": names,
                     "warnings": [str(w) for w in checked.warnings]})
    else:
        listed = ", ".join(f"{n['kind']} {n['name']}" for n in names)
        _say(f"{args.file}: ok ({listed})")
    return 0


class UsageError(Exception):
    """Flags that contradict each other or do not apply: one line, exit 2 (like argparse)."""


def cmd_compile(args: argparse.Namespace) -> int:
    if args.embedding != "random":
        given = [flag for flag, value in (("--dim", args.dim), ("--seed", args.seed))
                 if value is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} set random key embeddings: "
                             "they apply with --embedding random only")
    from lat.compiler.lower.memory import Embedding

    embedding = Embedding(args.embedding, args.dim, args.seed or 0)
    compilation = api.compile_file(args.file, name=args.name, placement=args.program_in,
                                   minimise=args.minimise, embedding=embedding,
                                   max_memory=args.max_memory)
    _warnings(compilation)
    model = compilation.artifact  # for context placement: the universal executor
    target = _compile_target(args)
    model.save(target)
    summary = {**model_summary(model), "placement": args.program_in, "artifact": str(target)}
    if args.program_in == "context":
        summary.update(context_sizes(compilation.model))
    if args.minimise:
        summary["states"] = len(compilation.declaration.states)
    if args.json:
        _print_json(summary)
    else:
        out.print(_summary_table(summary, f"compiled {args.file}"))
    return 0


def _compile_target(args: argparse.Namespace) -> Path:
    """`-o`, or the program's stem + .safetensors in the current folder."""
    return Path(args.output or Path(args.file).with_suffix(".safetensors").name)


def check_outputs(args: argparse.Namespace) -> None:
    """Every path a command will write, checked before any work starts (one line, exit 1):
    not one of its input files, not a directory, in an existing, writable folder."""
    inputs = tuple(getattr(args, name, None) for name in ("file", "program", "traces",
                                                            "input_file", "against"))
    inputs = tuple(path for path in inputs if path not in (None, "-"))
    if args.command == "compile":
        check_output_path(_compile_target(args), inputs)
    elif getattr(args, "output", None):
        check_output_path(args.output, inputs)
    if getattr(args, "plot", None):
        check_output_path(args.plot, inputs, flag="--plot")


@contextmanager
def _running(message: str, show: bool) -> Iterator[None]:
    """A spinner with the elapsed time on a terminal's stderr while a long run goes on
    (Ctrl-C ends it: `main` prints one line and exits 130)."""
    if not show or not err.is_terminal:
        yield
        return
    started = time.perf_counter()
    with err.status(Text(message)) as status:

        def tick() -> None:
            while not done.wait(1.0):
                status.update(Text(f"{message} … {time.perf_counter() - started:.0f} s"))

        done = threading.Event()
        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()


def context_sizes(bound: CompiledModel) -> dict[str, object]:
    """Prompt length and tokens per simulated step of a bound context-placement model."""
    per_step = int(bound.interface.extra.get("tokens_per_step", 1))
    prompt = len(bound.interface.prompt)
    return {"prompt_tokens": prompt, "tokens_per_step": per_step,
            "tokens_for_t_steps": f"c(t) = {prompt} + {per_step}·t"}


def _read_text(source: str, what: str) -> str:
    """The text of FILE, or of standard input for '-' (UTF-8; a BOM is dropped)."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        return data.decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{what} {source}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{what} {source} is a directory") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {source}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{what} {source}: cannot read ({exc.strerror or exc})") from None


def run_input(args: argparse.Namespace) -> str:
    """The word `run` executes: --input WORD, --input - (standard input) or --input-file
    FILE; text read from a file or stdin loses one final line break, nothing else."""
    if args.input_file is None and args.input != "-":
        return args.input
    source = "-" if args.input_file is None else args.input_file
    text = _read_text(source, "--input-file" if args.input_file else "--input")
    for ending in ("\r\n", "\n", "\r"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def cmd_run(args: argparse.Namespace) -> int:
    from lat.runtime.forms import KERNELS

    if args.kernel not in KERNELS:
        raise UsageError(f"--kernel {args.kernel!r} is not a form: choose from "
                         f"{', '.join(KERNELS)}")
    word = run_input(args)
    model = api.load_model(args.file, name=args.name, placement=args.program_in,
                           program=args.program, program_name=args.program_name,
                           max_memory=args.max_memory)
    if model.interface.extra.get("placement") == "context" and not model.interface.prompt[:-1]:
        raise InputError("this artifact executes a program given in its prompt: "
                         "pass --program FILE")
    worst = api.worst_case_steps(model, len(word))
    with _running(f"running {model.interface.program}: up to "
                  f"{min(worst, args.max_steps):,} steps", worst > 20_000 and not args.json):
        report = api.run(model, word, reference=args.reference, kernel=args.kernel,
                         device=args.device, weights=args.weights, max_steps=args.max_steps)
    if report.get("certified") is False:
        err.print(f"warning: outside the learned model's certificate: "
                  f"{report['certified_reason']}", markup=False, highlight=False)
    if not report["margin_resolved"]:
        raise PrecisionError(
            f"decode margin {report['margin']:.3g} is below what the number format resolves; "
            "the answer cannot be trusted"
        )
    if args.json:
        _print_json(report)
        return 0
    _say((str(report["program"]), "bold"),
         f" ({report['kind']}) on {' '.join(report['input'])!r}")
    if "trace" in report:
        _say("trace:  " + " → ".join(report["trace"]))
    if "status" in report:
        _say(f"status: {report['status']}   final state: {report['final_state']}")
    _say("output: ", (str(report["output"]), "bold"),
         f"   steps: {report['steps']}   margin: {report['margin']:.3g}")
    if report.get("certified"):
        _say(f"certified: {report['certified_reason']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    inputs = None
    if args.input_file is not None:
        if args.max_len is not None or args.samples is not None:
            raise UsageError("--input-file gives the inputs to check: leave out --max-len "
                             "and --samples, which choose them")
        inputs = _read_text(args.input_file, "--input-file").splitlines()
    compilation = api.compile_file(args.file, name=args.name, placement=args.program_in,
                                   max_memory=args.max_memory)
    _warnings(compilation)
    if compilation.model.interface.kind == "memory" and (args.max_len is not None
                                                         or args.samples is not None):
        raise UsageError("--max-len and --samples choose words; a memory's verify checks "
                         "every key (and keys outside the table): leave them out")
    with progress_bar(not args.json) as progress:
        report = api.verify(compilation, max_len=8 if args.max_len is None else args.max_len,
                            samples=args.samples or 20_000, seed=args.seed,
                            progress=progress, inputs=inputs, max_steps=args.max_steps)
    if args.json:
        _print_json(report.to_json())
    else:
        verdict = ("ok", "green") if report.ok else ("MISMATCH", "red")
        _say(f"{report.program}: ", verdict, f" — {report.checked} words ({report.domain}, "
             f"length ≤ {report.max_len}), {report.mismatches} mismatches, "
             f"min margin {report.min_margin:.3g}, {report.seconds:.2f}s")
        for example in report.examples:
            _say(f"  {example}")
    return 0 if report.ok else 1


def _source_model(args: argparse.Namespace) -> CompiledModel | None:
    if args.file is None:
        return None
    return api.load_model(args.file, name=args.name, placement=args.program_in)


def cmd_trace(args: argparse.Namespace) -> int:
    from lat.learner.traces import record_traces, sample_words, save_traces

    model = api.load_model(args.file, name=args.name, placement=args.program_in,
                           max_memory=args.max_memory)
    api.check_steps(model, args.max_len, args.max_steps)
    words = sample_words(model.interface, args.samples, args.max_len,
                         np.random.default_rng(args.seed))
    traces = record_traces(model, words)
    save_traces(traces, args.output)
    pairs = sum(len(t) for t in traces.tokens)
    summary = {"traces": len(words), "samples": pairs, "file": args.output}
    if args.json:
        _print_json(summary)
    else:
        _say(f"recorded {len(words)} rollouts ({pairs} (context, output) pairs) "
             f"to {args.output}")
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    from lat.learner import learn
    from lat.learner.traces import load_traces

    if args.file is not None and args.program is not None:
        raise UsageError("give the source once: a positional FILE or --program FILE")
    if args.program is not None:
        args.file = args.program
    source = _source_model(args)
    traces = load_traces(args.traces) if args.traces else None
    if source is None and traces is None:
        raise InputError("learn needs a program, an artifact or --traces")
    with progress_bar(True) as progress:  # stderr: beside --json's stdout too
        result = learn(source, traces=traces, samples=args.samples,
                       max_len=64 if args.max_len is None else args.max_len,
                       domain_max_len=args.max_len if source is None else None,
                       seed=args.seed, progress=progress, workers=args.workers,
                       design="qr" if args.design or args.compare_random else None,
                       compare_random=args.compare_random,
                       minimise=not args.no_minimise, exact=not args.no_exact,
                       exact_budget=args.exact_budget, design_rounds=args.design_rounds,
                       max_traces=args.max_traces)
    if args.output:
        result.model.save(args.output)
    report = result.to_json()
    if args.json:
        _print_json(report)
    else:
        _print_learn(report, args.output)
    if report.get("design_converged") is False:
        err.print("warning: the sampled design rounds ended with uncovered words still "
                  "being found (design_converged: false)", markup=False, highlight=False)
    agreed = result.equivalent if result.equivalent is not None else result.reproduces_traces
    if args.require == "proven" and not result.model.info["certified"]["proven"]:
        err.print(f"error: --require proven: {result.model.info['certified']['reason']}",
                  markup=False, highlight=False)
        return 1
    return 0 if agreed else 1


def _print_learn(report: dict, output: str | None) -> None:
    certificate = report["certificate"]
    table = Table(title="learned by least squares (Algorithm 1)", show_header=False,
                  title_justify="left")
    for key in ("samples", "traces", "train_max_abs_error"):
        table.add_row(key, f"{report[key]:.3g}" if isinstance(report[key], float)
                      else str(report[key]))
    before = report.get("heads_before_minimising")
    table.add_row("heads", str(report["heads"]) if before in (None, report["heads"])
                  else f"{report['heads']} (Algorithm 1: {before})")
    table.add_row("scope", Text(f"{certificate['scope']}: {certificate['domain']}"))
    if certificate.get("domain_dimension") is not None:
        table.add_row("domain dimension", str(certificate["domain_dimension"]))
    for key, value in certificate.items():
        if key in ("scope", "domain", "domain_dimension", "notes"):
            continue
        table.add_row(f"certificate.{key}", f"{value:.3g}" if isinstance(value, float)
                      else str(value))
    equivalence = report.get("equivalence") or {}
    if report["equivalent"] is None:
        table.add_row("reproduces traces", f"{report['reproduces_traces']} "
                      f"({report['checked']} recorded runs)")
    else:
        table.add_row("equivalent", f"{report['equivalent']} ({equivalence.get('method')}; "
                      f"{report['checked']} inputs run side by side)")
    table.add_row("evidence", Text(str(equivalence.get("statement", ""))))
    if report.get("design") in ("qr", "exact"):
        table.add_row("design", f"{report['traces']} {report['design']}-designed traces")
    comparison = report.get("design_comparison")
    if comparison:
        needed = (comparison["random_traces"] if comparison["random_covered"]
                  else f"not covered by {comparison['max_random']}")
        table.add_row("random traces to cover", f"{needed} (same domain, "
                      f"{comparison['domain_sequences']} words)")
    out.print(table)
    out.print(Text("notes: " + str(certificate.get("notes", ""))), style="dim")
    if output:
        out.print(Text(f"learned artifact: {output}"))


def cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if args.dot:
        if args.plot:
            raise UsageError("--dot prints a program's state graph and --plot draws an "
                             "artifact's weights: give one of them")
        from lat.compiler import check_file

        declaration = check_file(path).get(args.name)
        if not isinstance(declaration, CheckedAutomaton):
            raise InputError(f"--dot draws automata only; '{declaration.name}' is not one")
        from lat.compiler.graph import to_dot

        sys.stdout.write(to_dot(declaration))
        return 0
    model = api.load_model(path, name=args.name, max_memory=args.max_memory)
    summary = {**model_summary(model), "interface": json.loads(model.interface.to_json())}
    if args.plot:
        plot_weights(model, args.plot)
        summary["plot"] = args.plot
    if args.json:
        _print_json({**summary, "info": dict(model.info)})
    else:
        out.print(_summary_table({k: v for k, v in summary.items() if k != "interface"},
                                 f"artifact {path}"))
        fields = ", ".join(f"{f.name}[{f.width}]" for f in model.interface.token_fields)
        outputs = ", ".join(f"{f.name}[{f.width}]" for f in model.interface.output_fields)
        _say(f"token fields: {fields}")
        _say(f"output fields: {outputs}")
    return 0


def plot_weights(model: CompiledModel, path: str, max_heads: int = 4) -> None:
    """Heatmaps of V_h and Q_h for the first heads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = min(model.heads, max_heads)
    figure, axes = plt.subplots(heads, 2, figsize=(9, 3.6 * heads), squeeze=False)
    for h in range(heads):
        for column, (name, tensor) in enumerate((("V", model.V[h]), ("Q", model.Q[h]))):
            axis = axes[h][column]
            image = axis.imshow(tensor.double().numpy(), cmap="RdBu_r", aspect="auto",
                                interpolation="nearest")
            axis.set_title(f"{name}_{h}  ({tuple(tensor.shape)[0]}×{tuple(tensor.shape)[1]})")
            axis.set_xlabel("token coordinate")
            axis.set_ylabel("output coordinate" if name == "V" else "token coordinate")
            figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle(f"{model.interface.program}: H={model.heads}, d={model.d}, "
                    f"d_out={model.d_out}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def cmd_decompile(args: argparse.Namespace) -> int:
    from lat.decompile import decompile

    inputs = (args.file, args.against, args.program)
    if args.output:
        check_output_path(args.output, inputs)
    model = api.load_model(args.file, program=args.program)
    against = api.check_file(args.against).get() if args.against else None
    report = decompile(model, against=against, samples=args.samples, max_len=args.max_len,
                       inputs=args.inputs, seed=args.seed, source=args.file)
    if args.against:
        report.reference = args.against
    if args.output and report.program is not None:
        atomic_write(args.output, report.program.encode("utf-8"))
    ok = report.consistent and report.equivalent_to_reference is not False
    if args.json:
        _print_json(report.to_json())
        return 0 if ok else 1
    if not report.consistent:
        err.print(Text(f"lat: {args.file} is not decompilable: {len(report.inconsistent)} "
                       f"table entries read inconsistently"))
        for entry in report.inconsistent[:20]:
            seen = "; ".join(f"{json.dumps(s['value'])} ×{s['readings']} "
                             f"(e.g. {json.dumps(s['examples'][0] if s['examples'] else {})})"
                             for s in entry["seen"])
            _say(f"  {entry['entry']}: {entry['why']}: {seen}")
        return 1
    if not args.output:
        sys.stdout.write(report.program)
    else:
        _say(f"decompiled {args.file} ({report.kind}, {len(report.entries)} entries, "
             f"{report.readings} readings agreed) to {args.output}")
    if report.equivalent_to_reference is not None:  # on stderr when stdout is the program
        say = _say if args.output else (lambda line: err.print(Text(one_line(line))))
        verdict = "equivalent to" if report.equivalent_to_reference else "DIFFERS from"
        say(f"{verdict} {args.against}: {report.comparison}")
        for difference in (report.differences or [])[:20]:
            say(f"  {difference['entry']}: model {json.dumps(difference['model'])}, "
                f"reference {json.dumps(difference['reference'])}")
        if report.distinguishing_input is not None:
            say(f"  distinguishing input: {json.dumps(report.distinguishing_input)}")
    return 0 if ok else 1


def cmd_experiment(args: argparse.Namespace) -> int:
    from lat.experiments import run_experiment

    if args.name == "report":
        return _experiment_report(args)
    if args.folder is not None or args.check is not None:
        raise UsageError("a folder and --check go with `lat experiment report DIR` only")
    names = sorted(EXPERIMENT_NAMES) if args.name == "all" else [args.name]
    results = {}
    for name in names:
        if not args.json:
            out.print(f"running {name} …", markup=False)
        results[name] = run_experiment(name, quick=args.quick, out=args.out)
        if not args.json:
            out.print(f"  {name}: {results[name]['seconds_total']:.1f}s → "
                      f"{Path(args.out) / (name + '.json')}", markup=False)
    if args.json:
        _print_json(results[names[0]] if len(names) == 1 else results)
    return 0


def _experiment_report(args: argparse.Namespace) -> int:
    """Print the README's Results section from DIR's JSON, or --check it (exit 1 on any
    difference, the diff on stdout)."""
    from lat.experiments.report import MissingResults, differences, render, section

    if args.folder is None:
        raise UsageError("lat experiment report needs the folder of JSON files: "
                         "lat experiment report DIR [--check README.md]")
    if args.quick or args.json:
        raise UsageError("--quick and --json do not apply to `lat experiment report`")
    try:
        text = render(args.folder)
    except MissingResults as error:
        raise UsageError(str(error)) from None
    if args.check is None:
        sys.stdout.write(text)
        return 0
    try:
        readme = Path(args.check).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {args.check}: {error.strerror}") from None
    diff = differences(text, section(readme))
    if diff:
        sys.stdout.write("\n".join(diff) + "\n")
        err.print(Text(f"lat: {args.check}'s Results section differs from the JSON in "
                       f"{args.folder} ({len(diff)} diff lines); regenerate it with "
                       f"`lat experiment report {args.folder}`"))
        return 1
    _say(f"{args.check}: the Results section agrees with {args.folder}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lat.bench import run_bench, summary_rows

    result = run_bench(quick=args.quick, device=args.device)
    if args.json:
        _print_json(result)
        return 0
    table = Table("figure", "value", title=f"lat bench on {result.get('device')}",
                  title_justify="left")
    for figure, value in summary_rows(result):
        table.add_row(figure, value)
    out.print(table)
    return 0


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
DEMO_PROGRAM = "div3.lat"
DEMO_INPUTS = ("110", "1001", "111111", "10")


def cmd_demo(args: argparse.Namespace) -> int:
    from lat.learner import learn

    started = time.perf_counter()
    text = api.shipped_program(DEMO_PROGRAM)
    out.rule(f"1. the program: {DEMO_PROGRAM}")
    out.print(Syntax(text, "python", theme="ansi_dark", line_numbers=False, word_wrap=True))
    from lat.compiler import compile_source

    compilation = compile_source(text, DEMO_PROGRAM)
    model = compilation.model
    out.rule("2. compiled to linear attention")
    summary = model_summary(model)
    out.print(f"H={summary['heads']} heads, d={summary['d']}, d_out={summary['d_out']}, "
              f"{summary['parameters']} parameters, decode margin {summary['decode_margin']}")
    out.rule("3. runs")
    table = Table("input", "trace", "output", "margin")
    for word in DEMO_INPUTS:
        report = api.run(model, word)
        table.add_row(word, " → ".join(report["trace"]), str(report["output"]),
                      f"{report['margin']:.3g}")
    out.print(table)
    out.rule("4. verified against the reference interpreter")
    check = api.verify(compilation, max_len=10, samples=5_000)
    out.print(f"{check.checked} words ({check.domain}, length ≤ {check.max_len}): "
              f"{check.mismatches} mismatches, min margin {check.min_margin:.3g}")
    out.rule("5. relearned from its own traces (least squares + SVD)")
    with progress_bar(True) as progress:
        result = learn(model, max_len=24, seed=0, progress=progress)
    _print_learn(result.to_json(), None)
    verdict = "[green]equivalent[/]" if result.equivalent else "[red]NOT equivalent[/]"
    how = result.equivalence.statement if result.equivalence else ""
    out.print(f"verdict: learned model is {verdict} to the compiled one: ", end="")
    out.print(Text(f"{how}; {time.perf_counter() - started:.1f}s in all"))
    return 0 if (result.equivalent and check.ok) else 1


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lat",
        description="Compile .lat programs to linear-attention weights, run, verify and "
        "relearn them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def limits(p: argparse.ArgumentParser, steps: bool = True) -> None:
        p.add_argument("--max-memory", type=_size, default=DEFAULT_MAX_MEMORY, metavar="SIZE",
                       help="refuse a compile estimated to need more (default 2G; e.g. 512M, "
                       "64G)")
        if steps:
            p.add_argument("--max-steps", type=_positive, default=DEFAULT_MAX_STEPS,
                           metavar="N", help="most steps one run may take (default 100,000)")

    p = command("check", cmd_check, "parse and check a .lat file")
    p.add_argument("file")
    limits(p, steps=False)
    p.add_argument("--json", action="store_true")

    p = command("compile", cmd_compile, "compile a declaration to an MHLA artifact")
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

    p = command("run", cmd_run, "execute a program or artifact on one input")
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

    p = command("verify", cmd_verify, "compare the compiled model with the interpreter")
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

    p = command("trace", cmd_trace, "record rollouts as (context, output) pairs")
    p.add_argument("file")
    p.add_argument("--name")
    p.add_argument("--program-in", choices=("weights", "context"), default="weights")
    p.add_argument("--samples", type=_positive, default=1000, help="number of rollouts")
    p.add_argument("--max-len", type=_non_negative, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    limits(p)
    p.add_argument("--json", action="store_true")

    p = command("learn", cmd_learn, "relearn weights from traces by least squares")
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
    p.add_argument("--require", choices=("proven",),
                   help="exit 1 unless equivalence is proven on an exact domain")
    p.add_argument("--no-minimise", action="store_true",
                   help="keep Algorithm 1's heads (skip the fewest-heads search)")
    p.add_argument("-o", "--output", help="write the learned artifact here")
    p.add_argument("--json", action="store_true")

    p = command("inspect", cmd_inspect, "describe an artifact (or draw a program's graph)")
    p.add_argument("file")
    p.add_argument("--name")
    p.add_argument("--dot", action="store_true", help="print the state graph as DOT")
    p.add_argument("--plot", metavar="PNG", help="heatmaps of V_h and Q_h")
    limits(p, steps=False)
    p.add_argument("--json", action="store_true")

    p = command("decompile", cmd_decompile,
                "read a model's program off its behaviour and print it as .lat")
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

    command("demo", cmd_demo, "compile, run, verify and relearn a shipped program")

    p = command("experiment", cmd_experiment, "reproduce an experiment: JSON and PNG plots")
    p.add_argument("name", choices=sorted(EXPERIMENT_NAMES) + ["all", "report"],
                   help="an experiment, all of them, or `report DIR` (the README's Results "
                   "section from DIR's JSON files)")
    p.add_argument("folder", nargs="?", help="with `report`: the folder of JSON files")
    p.add_argument("--check", metavar="README",
                   help="with `report`: exit 1 when README's Results section differs")
    p.add_argument("--quick", action="store_true", help="the small setting (all in < 5 min)")
    p.add_argument("--out", default="experiments", help="folder for the JSON and PNGs")
    p.add_argument("--json", action="store_true")

    p = command("bench", cmd_bench, "measure the runtime against this machine's matmul")
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


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_outputs(args)
        return args.handler(args)
    except LatError as error:
        err.print(Text(str(error.diagnostic)))
        return 2
    except UsageError as error:
        err.print(Text(f"lat: error: {one_line(str(error))}"))
        return 2
    except (InputError, ArtifactError, PrecisionError, ResourceError) as error:
        err.print(Text(f"lat: error: {one_line(str(error))}"))
        return 1
    except (ValueError, RuntimeError) as error:  # e.g. --device cuda on a CPU machine
        err.print(Text(f"lat: error: {one_line(str(error))}"))
        return 1
    except MemoryError:
        err.print(Text("lat: error: out of memory; lower the program's sizes, or check the "
                       "estimate with `lat check --json` and the --max-memory limit"))
        return 1
    except KeyboardInterrupt:
        err.print("lat: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
