"""Budgets a user sets on `learn`: wall-clock time and memory, and the estimate they are
checked against (docs/ARCHITECTURE.md, "The learner").

- **Estimate.** Before the first fit, a pilot of the training words is rolled out and its
  sparse features are built (features.py): tokens and feature entries per prefix, the
  support and blocks the pilot reaches. Scaled to every training word this gives the fit's
  size — prefixes, feature entries, bytes — and how many traces a memory budget allows.
- **Memory.** An estimate over the budget is refused before anything large is built
  (`OverBudget`, with the estimate and the traces that would fit); otherwise the design
  rounds may add traces only up to what the budget allows, and the resident memory is
  also checked at every progress report. Phases that allocate between reports (head
  recovery, the fewest-heads search, the check's rollouts) first estimate their own peak
  from the shapes involved and `reserve` it: with the resident memory it must fit the
  budget, or the phase does not start (`MemoryUp`, handled as a stopped phase).
- **The machine's own limit.** Without a memory budget, `learn` takes the memory the
  machine has when it starts (`machine_budget`: resident + 90 % of MemAvailable, Linux),
  so that a run too big for the machine stops a phase with a report instead of being
  killed by the kernel mid-way (the default copy-machine learn was, at 22.6 GB, after 22
  minutes).
- **Time.** Every progress report checks the clock; past the deadline the phase at work
  stops (`TimeUp`, caught by `learn`), and the run keeps what it reached: the last finished
  fit, without the phases it had no time for. No verdict is made from work not done.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field

import numpy as np

from lat.learner.features import block_layout, column_labels, prefix_features
from lat.learner.traces import Traces, record_traces
from lat.runtime.errors import ResourceError
from lat.runtime.model import CompiledModel

Progress = Callable[[str, int, int], None]

PILOT_WORDS = 48  # training words rolled out to estimate the fit's size
# Peak bytes per sparse feature entry while the fit holds them: the COO triplet (24),
# its concatenation and sort orders (≈ 40) and the per-block gathers (≈ 24).
BYTES_PER_ENTRY = 88
BASELINE_BYTES = 400 << 20  # the interpreter, torch and numpy, where /proc cannot say

__all__ = ["BASELINE_BYTES", "Budget", "BudgetUp", "Estimate", "MemoryUp", "OverBudget",
           "TimeUp", "afford_check", "estimate_fit", "estimate_words", "format_bytes",
           "in_force_room", "machine_budget", "note", "pilot_indices", "reserve",
           "resident_bytes",
           "rollout_bytes"]


class BudgetUp(Exception):
    """A budget ended the work of `phase` (raised at a progress report); `reason` is
    "time budget" or "memory budget", as the report says it."""

    reason = "budget"

    def __init__(self, phase: str, detail: str = "") -> None:
        super().__init__(f"the {self.reason} ended {phase}{detail}")
        self.phase = phase


class TimeUp(BudgetUp):
    reason = "time budget"


class MemoryUp(BudgetUp):
    reason = "memory budget"


@dataclass(frozen=True)
class Estimate:
    """The size of a fit to `traces` training words, from a pilot of `pilot` of them.

    `support` and `blocks` are what the pilot reaches (lower bounds for the whole set);
    `bytes` is the estimated peak (this process's resident memory now, plus the fit),
    `bytes_per_trace` what one more trace adds. The head count is known only after the
    fit, so `bytes_per_head` (one head laid out densely, float64) is given apart: head
    recovery, the head search and the check reserve their own peaks when they start."""

    traces: int
    pilot: int
    prefixes: int
    feature_entries: int
    support: int
    blocks: int
    largest_block: int
    trace_bytes: int
    bytes: int
    bytes_per_trace: int
    bytes_per_head: int = 0
    resident: int = 0  # of this process when estimated (part of `bytes`)

    def affordable_traces(self, memory: int) -> int:
        """Traces whose fit stays within `memory` bytes."""
        fixed = self.bytes - self.traces * self.bytes_per_trace
        return max(0, (memory - fixed) // max(self.bytes_per_trace, 1))

    def affordable_now(self, memory: int, heads_bytes: int) -> int:
        """Traces a refit may have now, while the process holds more than when estimated
        (the last fit, kept until the refit is done) and the refit's heads take about
        `heads_bytes` (those of the fit it replaces)."""
        held = (resident_bytes() or BASELINE_BYTES) - self.resident + heads_bytes
        return self.affordable_traces(memory - max(held, 0))

    def describe(self) -> str:
        return (f"{self.traces:,} traces, {self.prefixes:,} prefixes, ~{self.feature_entries:,} "
                f"feature entries, support ≥ {self.support:,} features in ≥ {self.blocks:,} "
                f"blocks (largest ≥ {self.largest_block:,}), ~{format_bytes(self.bytes)} "
                f"peak (from a pilot of {self.pilot} traces), then "
                f"{format_bytes(self.bytes_per_head)} per head recovered")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class OverBudget(ResourceError):
    """Refused up front: the estimate is over the memory budget."""

    def __init__(self, estimate: Estimate, memory: int, machine: bool = False) -> None:
        fits = estimate.affordable_traces(memory)
        raise_it = ("--memory-budget cannot go above what the machine has" if machine
                    else "raise --memory-budget")
        hint = (f"--max-traces {fits:,} (or --samples {fits:,}) would fit; or "
                f"{raise_it}" if fits >= 1 else raise_it)
        which = ("the memory this machine has available" if machine
                 else "the memory budget")
        super().__init__(
            f"estimate {estimate.describe()} is over {which} of "
            f"{format_bytes(memory)}; {hint}")
        self.estimate = estimate
        self.memory = memory
        self.affordable = fits


@dataclass
class Budget:
    """The deadline and memory limit of one `learn` run (None: unlimited)."""

    seconds: float | None = None
    memory: int | None = None
    started: float = 0.0
    notes: list[str] = field(default_factory=list)  # cheaper paths the passes took

    def __post_init__(self) -> None:
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"a time budget must be positive, not {self.seconds}")
        if self.memory is not None and self.memory <= 0:
            raise ValueError(f"a memory budget must be positive, not {self.memory}")
        self.started = self.started or time.perf_counter()

    @property
    def limited(self) -> bool:
        return self.seconds is not None or self.memory is not None

    def expired(self) -> bool:
        return self.seconds is not None and time.perf_counter() - self.started > self.seconds

    def check(self, phase: str) -> None:
        """Raise TimeUp past the deadline, MemoryUp past the memory budget."""
        if self.expired():
            raise TimeUp(phase)
        if self.memory is not None:
            resident = resident_bytes()
            if resident is not None and resident > self.memory:
                raise MemoryUp(phase, f" ({format_bytes(resident)} resident)")

    def left(self, share: float = 1.0) -> float | None:
        """`share` of the seconds left before the deadline (None: no time budget)."""
        if self.seconds is None:
            return None
        return share * max(0.0, self.seconds - (time.perf_counter() - self.started))

    def afford(self, phase: str, needed: int, what: str = "") -> None:
        """Raise MemoryUp when `needed` more bytes (a phase's estimated peak) on top of the
        resident memory would pass the memory budget: the phase is then not started."""
        if self.memory is None:
            return
        resident = resident_bytes() or BASELINE_BYTES
        if resident + needed > self.memory:
            raise MemoryUp(phase, f" before it started: {what or 'it'} needs ~"
                           f"{format_bytes(needed)} on top of {format_bytes(resident)} "
                           f"resident, over the {format_bytes(self.memory)} budget")

    @contextmanager
    def in_force(self) -> Iterator[Budget]:
        """Make this the budget `reserve` checks against (within this context)."""
        token = _IN_FORCE.set(self)
        try:
            yield self
        finally:
            _IN_FORCE.reset(token)

    def guard(self, progress: Progress | None, fraction: float = 1.0) -> Progress | None:
        """`progress` that also checks the budget at every report (unchanged if unlimited);
        with `fraction` < 1 the deadline is that part of the time budget."""
        if not self.limited:
            return progress
        part = self if fraction == 1.0 or self.seconds is None else Budget(
            self.seconds * fraction, self.memory, self.started)

        def guarded(phase: str, done: int, total: int) -> None:
            if progress is not None:
                progress(phase, done, total)
            part.check(phase)

        return guarded


_IN_FORCE: ContextVar[Budget | None] = ContextVar("lat_budget_in_force", default=None)


def reserve(phase: str, needed: int, what: str = "") -> None:
    """`Budget.afford` on the budget in force (`Budget.in_force`); nothing without one.
    Called by the passes themselves (heads.py, minimise.py) just before a big allocation,
    so a caller need not thread the budget through every fit."""
    budget = _IN_FORCE.get()
    if budget is not None:
        budget.afford(phase, needed, what)


def in_force_room() -> int | None:
    """Bytes the memory budget in force leaves above the resident memory (None: none)."""
    budget = _IN_FORCE.get()
    if budget is None or budget.memory is None:
        return None
    return budget.memory - (resident_bytes() or BASELINE_BYTES)


def note(line: str) -> None:
    """Record, on the budget in force, a cheaper path a pass took to stay within it."""
    budget = _IN_FORCE.get()
    if budget is not None:
        budget.notes.append(line)


def afford_check(budget: Budget, V: np.ndarray, Q: np.ndarray, batch: int) -> None:
    """MemoryUp ("check") when rolling out heads V, Q `batch` inputs at a time would pass
    the memory budget (`rollout_bytes`)."""
    if budget.memory is not None:
        heads, d_out, d = V.shape
        budget.afford("check", rollout_bytes(heads, d, d_out, batch, int(np.count_nonzero(Q))),
                      f"rolling out the {heads:,}-head model")


def rollout_bytes(heads: int, d: int, d_out: int, batch: int, nonzeros: int) -> int:
    """Peak bytes of rolling out a model of `heads` heads (`nonzeros` entries of Q nonzero)
    `batch` inputs at a time with the runtime's coordinate decoder (lat/runtime/forms): |V|
    and |Q| in float64 for the rounding bound, then two decoders (the outputs' and the
    bound's), each holding V and Q in fp32, its value table and its per-code tables (index,
    head and coefficient per nonzero, padded and unpadded), while one of them is built
    (Q's nonzero mask and coordinates), and the state."""
    weights = heads * d * (d_out + d)
    decoder = 4 * weights + 4 * (d + 1) * heads * d_out + 2 * nonzeros * (8 + 8 + 4)
    building = heads * d * d + 2 * 3 * 8 * nonzeros + 2 * 8 * nonzeros
    state = 2 * batch * (d + 1) * d_out * 8
    return int(8 * weights + 2 * decoder + building + state)


def estimate_fit(tokens: Sequence[np.ndarray], outputs_width: int, total: int) -> Estimate:
    """Estimate the fit to `total` traces from the pilot traces' tokens (T, d) float64."""
    pilot = len(tokens)
    lengths = np.array([t.shape[0] for t in tokens], dtype=np.float64)
    entries, rows, cols, offset = 0, [], [], 0
    for sequence in tokens:
        r, c, _ = prefix_features(sequence)
        entries += r.size
        rows.append(r + offset)
        cols.append(c)
        offset += sequence.shape[0]
    d = tokens[0].shape[1] if tokens else 0
    support = blocks = largest = 0
    if entries:
        all_cols = np.concatenate(cols)
        columns, local = np.unique(all_cols, return_inverse=True)
        labels = column_labels(np.concatenate(rows), local, columns.size)
        _, bounds, _ = block_layout(labels)
        sizes = np.diff(bounds)
        support, blocks, largest = columns.size, sizes.size, int(sizes.max())
    scale = total / max(pilot, 1)
    resident = resident_bytes() or BASELINE_BYTES
    mean_length = float(lengths.mean()) if pilot else 0.0
    per_trace = (mean_length * (d + outputs_width) * 8  # the trace itself, float64
                 + mean_length * outputs_width * 8 * 2  # outputs stacked and predicted
                 + entries / max(pilot, 1) * BYTES_PER_ENTRY)
    dense = 8 * 3 * largest * min(largest, max(1, int(mean_length * total)))  # Gram, basis
    return Estimate(
        traces=total, pilot=pilot, prefixes=int(round(lengths.sum() * scale)),
        feature_entries=int(round(entries * scale)), support=int(support),
        blocks=int(blocks), largest_block=int(largest),
        trace_bytes=int(mean_length * (d + outputs_width) * 8 * total),
        bytes=int(resident + dense + per_trace * total), resident=resident,
        bytes_per_trace=int(math.ceil(per_trace)), bytes_per_head=8 * d * (d + outputs_width))


def estimate_words(source: CompiledModel | None, traces: Traces | None,
                   words: Sequence[Sequence[str]]) -> Estimate:
    """The fit's size from a pilot of the training words (or of the given traces)."""
    if traces is not None:
        tokens = [traces.tokens[i] for i in pilot_indices(len(traces))]
        return estimate_fit(tokens, traces.interface.d_out, len(traces))
    pilot = [words[i] for i in pilot_indices(len(words))]
    tokens = record_traces(source, pilot).tokens if pilot else []
    return estimate_fit(tokens, source.d_out, len(words))


def pilot_indices(total: int, count: int = PILOT_WORDS) -> list[int]:
    """`count` indices of 0..total−1, evenly spread (all of them when fewer)."""
    if total <= count:
        return list(range(total))
    return np.unique(np.linspace(0, total - 1, count).round().astype(int)).tolist()


def available_bytes() -> int | None:
    """Memory the kernel says is available to new work (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_budget() -> int | None:
    """The memory budget of a run given none: what this process holds plus 90 % of what
    the machine has available now (None where the system cannot say)."""
    available = available_bytes()
    if available is None:
        return None
    return (resident_bytes() or BASELINE_BYTES) + int(0.9 * available)


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux /proc), or None where unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"
