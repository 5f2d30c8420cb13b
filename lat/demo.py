"""`lat demo`: a shipped program compiled, run, verified and relearned, printed as a tour
(docs/ARCHITECTURE.md, "The face")."""

from __future__ import annotations

import time

from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from lat import api
from lat.cli_io import out, print_learn
from lat.compiler import compile_source
from lat.inspection import model_summary
from lat.learner import learn
from lat.progress import progress_bar

DEMO_PROGRAM = "div3.lat"
DEMO_INPUTS = ("110", "1001", "111111", "10")


def run_demo() -> int:
    """Print the tour on stdout; 0 when the relearned model is equivalent and the compiled
    one verified, else 1."""
    started = time.perf_counter()
    text = api.shipped_program(DEMO_PROGRAM)
    out.rule(f"1. the program: {DEMO_PROGRAM}")
    out.print(Syntax(text, "python", theme="ansi_dark", line_numbers=False, word_wrap=True))
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
    print_learn(result.to_json(), None)
    verdict = "[green]equivalent[/]" if result.equivalent else "[red]NOT equivalent[/]"
    how = result.equivalence.statement if result.equivalence else ""
    out.print(f"verdict: learned model is {verdict} to the compiled one: ", end="")
    out.print(Text(f"{how}; {time.perf_counter() - started:.1f}s in all"))
    return 0 if (result.equivalent and check.ok) else 1
