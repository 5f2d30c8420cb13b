"""The `lat` command: it parses (`lat.cli_parser`), calls the library (`lat.api`,
`lat.inspection`, `lat.decompile`, ...) and prints (`lat.cli_io`). Every user mistake ends
in one located line and a non-zero exit.

Exit codes: 0 success; 1 a run-time failure (bad input word, missing, corrupt or edited
artifact, an output path that cannot be written, a --max-steps limit, verification mismatch,
non-equivalent learning); 2 a program error (`FILE:LINE:COL`, a --max-memory refusal
included) or a usage error; 130 interrupted (Ctrl-C); 70 a bug in lat (anything but the
project's own error types: the traceback is printed, to be reported). User text is printed
literally.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from lat.cli_io import (
    check_outputs,
    compile_target,
    err,
    out,
    print_json,
    print_learn,
    print_warnings,
    read_text,
    run_input,
    running,
    say,
    summary_table,
)
from lat.cli_parser import EXPERIMENT_NAMES, build_parser
from lat.compiler.errors import LatError, one_line
from lat.compiler.kinds import kind_of
from lat.progress import progress_bar
from lat.runtime.errors import (
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
inspection = _Lazy("lat.inspection")


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
        print_json({"file": args.file, "ok": True, "declarations": names,
                     "warnings": [str(w) for w in checked.warnings]})
    else:
        listed = ", ".join(f"{n['kind']} {n['name']}" for n in names)
        say(f"{args.file}: ok ({listed})")
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
    print_warnings(compilation.warnings)
    model = compilation.artifact  # for context placement: the universal executor
    target = compile_target(args)
    model.save(target)
    summary = {**inspection.model_summary(model), "placement": args.program_in,
               "artifact": str(target)}
    if args.program_in == "context":
        summary.update(inspection.context_sizes(compilation.model))
    if args.minimise:
        summary["states"] = len(compilation.declaration.states)
    if args.json:
        print_json(summary)
    else:
        out.print(summary_table(summary, f"compiled {args.file}"))
    return 0


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
    with running(f"running {model.interface.program}: up to "
                 f"{min(worst, args.max_steps):,} steps", worst > 20_000 and not args.json):
        report = api.run(model, word, reference=args.reference, kernel=args.kernel,
                         device=args.device, weights=args.weights, max_steps=args.max_steps,
                         on_unresolved="raise")
    if report.get("certified") is False:
        err.print(f"warning: outside the learned model's certificate: "
                  f"{report['certified_reason']}", markup=False, highlight=False)
    if args.json:
        print_json(report)
        return 0
    say((str(report["program"]), "bold"),
        f" ({report['kind']}) on {' '.join(report['input'])!r}")
    if "trace" in report:
        say("trace:  " + " → ".join(report["trace"]))
    if "status" in report:
        say(f"status: {report['status']}   final state: {report['final_state']}")
    say("output: ", (str(report["output"]), "bold"),
        f"   steps: {report['steps']}   margin: {report['margin']:.3g}")
    if report.get("certified"):
        say(f"certified: {report['certified_reason']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    inputs = None
    if args.input_file is not None:
        if args.max_len is not None or args.samples is not None:
            raise UsageError("--input-file gives the inputs to check: leave out --max-len "
                             "and --samples, which choose them")
        inputs = read_text(args.input_file, "--input-file").splitlines()
    compilation = api.compile_file(args.file, name=args.name, placement=args.program_in,
                                   max_memory=args.max_memory)
    print_warnings(compilation.warnings)
    fixed_domain = kind_of(compilation.declaration).fixed_verify_domain
    if fixed_domain is not None and (args.max_len is not None or args.samples is not None):
        raise UsageError(f"--max-len and --samples choose words; {fixed_domain}: "
                         "leave them out")
    with progress_bar(not args.json) as progress:
        report = api.verify(compilation, max_len=8 if args.max_len is None else args.max_len,
                            samples=args.samples or 20_000, seed=args.seed,
                            progress=progress, inputs=inputs, max_steps=args.max_steps)
    if args.json:
        print_json(report.to_json())
    else:
        verdict = ("ok", "green") if report.ok else ("MISMATCH", "red")
        say(f"{report.program}: ", verdict, f" — {report.checked} words ({report.domain}, "
            f"length ≤ {report.max_len}), {report.mismatches} mismatches, "
            f"min margin {report.min_margin:.3g}, {report.seconds:.2f}s")
        for example in report.examples:
            say(f"  {example}")
    return 0 if report.ok else 1


def _source_model(args: argparse.Namespace) -> CompiledModel | None:
    if args.file is None:
        return None
    return api.load_model(args.file, name=args.name, placement=args.program_in)


def cmd_trace(args: argparse.Namespace) -> int:
    model = api.load_model(args.file, name=args.name, placement=args.program_in,
                           max_memory=args.max_memory)
    recording = inspection.record_trace_file(model, args.output, samples=args.samples,
                                             max_len=args.max_len, seed=args.seed,
                                             max_steps=args.max_steps)
    if args.json:
        print_json(recording.to_json())
    else:
        say(f"recorded {recording.rollouts} rollouts ({recording.pairs} (context, output) "
            f"pairs) to {args.output}")
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
    from lat.learner.learn import LearnStopped

    def notify(line: str) -> None:  # the estimate, before the fit: stderr, also with --json
        err.print(Text(line), style="dim")

    try:
        with progress_bar(True) as progress:  # stderr: beside --json's stdout too
            result = learn(source, traces=traces, samples=args.samples,
                           max_len=64 if args.max_len is None else args.max_len,
                           domain_max_len=args.max_len if source is None else None,
                           seed=args.seed, progress=progress, workers=args.workers,
                           design="qr" if args.design or args.compare_random else None,
                           compare_random=args.compare_random,
                           minimise=not args.no_minimise, exact=not args.no_exact,
                           exact_budget=args.exact_budget, design_rounds=args.design_rounds,
                           max_traces=args.max_traces, time_budget=args.time_budget,
                           memory_budget=args.memory_budget, notify=notify)
    except LearnStopped as stopped:  # no fit was finished: no artifact, no verdict
        if args.json:
            print_json(stopped.report)
        err.print(Text(f"lat: stopped: {stopped}; no model was learned (traces recorded: "
                       f"{stopped.report['traces']})"))
        return 1
    if args.output:
        result.model.save(args.output)
    report = result.to_json()
    if args.json:
        print_json(report)
    else:
        print_learn(report, args.output)
    if report.get("stopped"):
        err.print(f"warning: the {report['stopped']} ended the run in {report['stopped_in']}"
                  f"; skipped: {', '.join(report['skipped']) or 'nothing'}", markup=False,
                  highlight=False)
    if report.get("design_converged") is False:
        err.print("warning: the sampled design rounds ended with uncovered words still "
                  "being found (design_converged: false)", markup=False, highlight=False)
    agreed = result.equivalent if result.equivalent is not None else result.reproduces_traces
    if args.require == "proven" and not result.model.info["certified"]["proven"]:
        err.print(f"error: --require proven: {result.model.info['certified']['reason']}",
                  markup=False, highlight=False)
        return 1
    return 0 if agreed else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if args.dot:
        if args.plot:
            raise UsageError("--dot prints a program's state graph and --plot draws an "
                             "artifact's weights: give one of them")
        from lat.compiler import check_file

        declaration = check_file(path).get(args.name)
        if kind_of(declaration).to_dot is None:
            raise InputError(f"--dot draws automata only; '{declaration.name}' is not one")
        from lat.compiler.graph import to_dot

        sys.stdout.write(to_dot(declaration))
        return 0
    model = api.load_model(path, name=args.name, max_memory=args.max_memory)
    summary = inspection.artifact_summary(model)
    if args.plot:
        inspection.plot_weights(model, args.plot)
        summary["plot"] = args.plot
    if args.json:
        print_json({**summary, "info": dict(model.info)})
    else:
        out.print(summary_table({k: v for k, v in summary.items() if k != "interface"},
                                f"artifact {path}"))
        fields = ", ".join(f"{f.name}[{f.width}]" for f in model.interface.token_fields)
        outputs = ", ".join(f"{f.name}[{f.width}]" for f in model.interface.output_fields)
        say(f"token fields: {fields}")
        say(f"output fields: {outputs}")
    return 0


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
        print_json(report.to_json())
        return 0 if ok else 1
    if not report.consistent:
        err.print(Text(f"lat: {args.file} is not decompilable: {len(report.inconsistent)} "
                       f"table entries read inconsistently"))
        for line in report.inconsistency_lines():
            say(line)
        return 1
    if not args.output:
        sys.stdout.write(report.program)
    else:
        say(f"decompiled {args.file} ({report.kind}, {len(report.entries)} entries, "
            f"{report.readings} readings agreed) to {args.output}")
    for line in report.comparison_lines():  # on stderr when stdout is the program
        if args.output:
            say(line)
        else:
            err.print(Text(one_line(line)))
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
        print_json(results[names[0]] if len(names) == 1 else results)
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
    say(f"{args.check}: the Results section agrees with {args.folder}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lat.bench import run_bench, summary_rows

    result = run_bench(quick=args.quick, device=args.device)
    if args.json:
        print_json(result)
        return 0
    table = Table("figure", "value", title=f"lat bench on {result.get('device')}",
                  title_justify="left")
    for figure, value in summary_rows(result):
        table.add_row(figure, value)
    out.print(table)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lat.demo import run_demo

    return run_demo()


HANDLERS = {
    "check": cmd_check, "compile": cmd_compile, "run": cmd_run, "verify": cmd_verify,
    "trace": cmd_trace, "learn": cmd_learn, "inspect": cmd_inspect, "decompile": cmd_decompile,
    "demo": cmd_demo, "experiment": cmd_experiment, "bench": cmd_bench,
}


#: The exit code of an error that is not one of the project's own: a bug (sysexits' EX_SOFTWARE).
BUG_EXIT = 70


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_outputs(args)
        return HANDLERS[args.command](args)
    except LatError as error:
        err.print(Text(str(error.diagnostic)))
        return 2
    except UsageError as error:
        err.print(Text(f"lat: error: {one_line(str(error))}"))
        return 2
    except (InputError, ArtifactError, PrecisionError, ResourceError) as error:
        err.print(Text(f"lat: error: {one_line(str(error))}"))
        return 1
    except OSError as error:  # a file or folder that cannot be read or written
        where = f"{error.filename}: " if error.filename is not None else ""
        err.print(Text(f"lat: error: {one_line(where + (error.strerror or str(error)))}"))
        return 1
    except MemoryError:
        err.print(Text("lat: error: out of memory; lower the program's sizes, or check the "
                       "estimate with `lat check --json` and the --max-memory limit"))
        return 1
    except KeyboardInterrupt:
        err.print("lat: interrupted")
        return 130
    except Exception as error:
        if isinstance(error, _lazy_error_types()):
            err.print(Text(f"lat: error: {one_line(str(error))}"))
            return 1
        # Anything else is a programming error: say so, with the traceback to report.
        traceback.print_exc(file=sys.stderr)
        err.print(Text("lat: this is a bug in lat; please report it with the command above"))
        return BUG_EXIT


def _lazy_error_types() -> tuple[type[Exception], ...]:
    """The project's error types that live in modules `lat check` must not import (they
    load numpy): taken only from modules already imported, since an error of a module
    never imported cannot have been raised."""
    types: list[type[Exception]] = []
    experiments = sys.modules.get("lat.experiments")
    if experiments is not None:
        types.append(experiments.UnknownExperiment)
    return tuple(types)


if __name__ == "__main__":
    sys.exit(main())
