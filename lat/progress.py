"""A rich progress bar for long loops on a terminal; plain throttled lines otherwise.

Where stderr is not a terminal (a log file, a pipe, CI) a long loop still says where it
is: one line `lat: <phase> <done>/<total>` at most every LINE_SECONDS, the first only after
LINE_SECONDS, so that short commands stay silent."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import monotonic

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

LINE_SECONDS = 10.0  # plain progress lines: at most one this often, none before it


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None] | None]:
    """Yield a `progress(phase, done, total)` callback, or None when it would not be seen."""
    if not enabled:
        yield None
        return
    if not sys.stderr.isatty():
        yield _plain_lines()
        return
    tasks: dict[str, int] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


def _plain_lines(every: float = LINE_SECONDS) -> Callable[[str, int, int], None]:
    """`progress(phase, done, total)` writing one plain stderr line at most every `every`
    seconds (none in the first `every`)."""
    last = monotonic()

    def update(phase: str, done: int, total: int) -> None:
        nonlocal last
        now = monotonic()
        if now - last >= every:
            last = now
            print(f"lat: {phase} {done:,}/{total:,}", file=sys.stderr, flush=True)

    return update
