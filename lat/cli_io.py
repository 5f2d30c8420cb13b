"""The `lat` command's terminal and file I/O (docs/ARCHITECTURE.md, "The face").

Two consoles (stdout for results, stderr for messages) that print user text literally, the
JSON writer, the summary and learn-report tables, a spinner for long runs, reading an input
word from an argument, a file or standard input, and checking every output path before any
work starts. Imports nothing heavy: `lat check` and `lat --help` stay free of torch and numpy.

User text (inputs, symbols, values, names, paths) is never read as rich markup or emoji
codes: every line that holds some is a `Text` (or `markup=False`), see `say`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lat.compiler.errors import one_line
from lat.runtime.errors import InputError
from lat.runtime.storage import check_output_path

out = Console(highlight=False, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)  # one message, one line


def say(*parts: str | tuple[str, str]) -> None:
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


def print_json(data: object) -> None:
    """`data` as indented JSON on stdout (numpy scalars as Python numbers)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: object) -> object:
    import numpy as np  # only for a value json cannot write: a report holding numpy scalars

    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_warnings(warnings: Iterable[object]) -> None:
    """A compile's warnings, one line each on stderr."""
    for warning in warnings:
        err.print(Text(str(warning)))


def summary_table(summary: dict[str, object], title: str) -> Table:
    """A two-column table of a summary dict, every key and value printed literally."""
    table = Table(title=Text(one_line(title)), show_header=False, title_justify="left")
    for key, value in summary.items():
        table.add_row(Text(one_line(key)), Text(one_line(str(value))))
    return table


def print_learn(report: dict, output: str | None) -> None:
    """A learn report (`LearnResult.to_json()`) as the table `lat learn` and `lat demo` show."""
    from lat.inspection import learn_summary  # loads numpy and torch: only when learning

    table = Table(title="learned by least squares (Algorithm 1)", show_header=False,
                  title_justify="left")
    for figure, value in learn_summary(report):
        table.add_row(Text(figure), Text(value))
    out.print(table)
    out.print(Text("notes: " + str(report["certificate"].get("notes", ""))), style="dim")
    if output:
        out.print(Text(f"learned artifact: {output}"))


@contextmanager
def running(message: str, show: bool) -> Iterator[None]:
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


def read_text(source: str, what: str) -> str:
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
    text = read_text(source, "--input-file" if args.input_file else "--input")
    for ending in ("\r\n", "\n", "\r"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def compile_target(args: argparse.Namespace) -> Path:
    """`-o`, or the program's stem + .safetensors in the current folder."""
    return Path(args.output or Path(args.file).with_suffix(".safetensors").name)


def check_outputs(args: argparse.Namespace) -> None:
    """Every path a command will write, checked before any work starts (one line, exit 1):
    not one of its input files, not a directory, in an existing, writable folder."""
    inputs = tuple(getattr(args, name, None) for name in ("file", "program", "traces",
                                                            "input_file", "against"))
    inputs = tuple(path for path in inputs if path not in (None, "-"))
    if args.command == "compile":
        check_output_path(compile_target(args), inputs)
    elif getattr(args, "output", None):
        check_output_path(args.output, inputs)
    if getattr(args, "plot", None):
        check_output_path(args.plot, inputs, flag="--plot")
