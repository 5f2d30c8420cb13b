"""The public API: compile, load, run, verify, learn — what the `lat` command is made of."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lat.compiler import Compilation, compile_source
from lat.compiler.interpret import run as interpret
from lat.compiler.ir import CheckedAutomaton
from lat.runtime.errors import ArtifactError, InputError
from lat.runtime.execute import RunResult, rollout
from lat.runtime.model import CompiledModel

Progress = Callable[[str, int, int], None]


def compile_file(
    path: str | Path,
    *,
    name: str | None = None,
    placement: str = "weights",
    minimise: bool = False,
) -> Compilation:
    """Read, check and compile one declaration of a `.lat` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read ({exc})") from None
    return compile_source(text, str(path), name=name, placement=placement, minimise=minimise)


def shipped_program(filename: str) -> str:
    """The text of a program shipped in programs/ (package data once installed)."""
    try:
        from importlib import resources

        return resources.files("lat.programs").joinpath(filename).read_text(encoding="utf-8")
    except ModuleNotFoundError:  # running from a source tree that is not installed
        path = Path(__file__).resolve().parent.parent / "programs" / filename
        return path.read_text(encoding="utf-8")


def load_model(path: str | Path, *, name: str | None = None) -> CompiledModel:
    """A `.lat` file is compiled on the fly; anything else is loaded as an artifact."""
    path = Path(path)
    if path.suffix == ".lat":
        return compile_file(path, name=name).model
    return CompiledModel.load(path)


def word_of(model: CompiledModel, word: str | Sequence[str]) -> tuple[str, ...]:
    """A command-line string split per DESIGN §3, or a symbol sequence, checked."""
    if isinstance(word, str):
        return model.interface.split_word(word)
    symbols = tuple(word)
    model.interface.check_word(symbols)
    return symbols


def run_report(model: CompiledModel, result: RunResult) -> dict[str, object]:
    """The `lat run --json` object (DESIGN §7) for one execution."""
    interface = model.interface
    report: dict[str, object] = {
        "program": interface.program,
        "kind": interface.kind,
        "input": list(result.input),
        "output": result.value(interface.result_field),
        "steps": result.steps,
        "margin": result.margin,
    }
    if interface.kind == "automaton":
        trace = list(result.decoded[interface.trace_field])
        report["trace"] = trace
        report["final_state"] = trace[-1]
    report["margin_resolved"] = result.margin_resolved
    return report


def run(
    model: CompiledModel, word: str | Sequence[str], *, reference: bool = False
) -> dict[str, object]:
    """Execute one input and return the `lat run --json` object."""
    symbols = word_of(model, word)
    return run_report(model, rollout(model, [symbols], reference=reference)[0])


def expected_report(declaration: CheckedAutomaton, word: tuple[str, ...]) -> dict[str, object]:
    """What the reference interpreter says the run report must contain."""
    truth = interpret(declaration, word)
    return {
        "output": truth.output,
        "trace": list(truth.trace),
        "final_state": truth.final_state,
        "steps": truth.steps,
    }


def domain_words(
    alphabet: Sequence[str], max_len: int, samples: int, seed: int = 0
) -> tuple[list[tuple[str, ...]], str]:
    """Every word up to `max_len` when there are at most `samples`, else `samples` random ones.

    Random words take a uniform length in 0..max_len, then uniform symbols, so short words
    are not drowned by the (far more numerous) long ones.
    """
    k = len(alphabet)
    total = sum(k**n for n in range(max_len + 1))
    if total <= samples:
        words = [w for n in range(max_len + 1) for w in itertools.product(alphabet, repeat=n)]
        return words, "exhaustive"
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, size=samples)
    words = [tuple(alphabet[i] for i in rng.integers(0, k, size=n)) for n in lengths]
    return words, "sampled"


@dataclass
class VerifyReport:
    """Compiled model against the reference interpreter over a bounded domain."""

    program: str
    checked: int
    mismatches: int
    min_margin: float
    domain: str
    max_len: int
    unresolved: int = 0
    examples: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.unresolved == 0

    def to_json(self) -> dict[str, object]:
        return {
            "program": self.program,
            "checked": self.checked,
            "mismatches": self.mismatches,
            "min_margin": self.min_margin,
            "unresolved_margins": self.unresolved,
            "domain": self.domain,
            "max_len": self.max_len,
            "examples": self.examples,
            "seconds": round(self.seconds, 3),
        }


def verify(
    compilation: Compilation,
    *,
    max_len: int = 8,
    samples: int = 20_000,
    seed: int = 0,
    progress: Progress | None = None,
    chunk: int = 2_000,
) -> VerifyReport:
    """Run the compiled model and the interpreter on the domain and count disagreements."""
    started = time.perf_counter()
    model, declaration = compilation.model, compilation.declaration
    if not isinstance(declaration, CheckedAutomaton):
        raise InputError(f"verify does not support {model.interface.kind} programs yet")
    words, domain = domain_words(declaration.alphabet, max_len, samples, seed)
    report = VerifyReport(model.interface.program, 0, 0, float("inf"), domain, max_len)
    for start in range(0, len(words), chunk):
        batch = words[start : start + chunk]
        for word, result in zip(batch, rollout(model, batch), strict=True):
            got = run_report(model, result)
            want = expected_report(declaration, word)
            report.checked += 1
            report.min_margin = min(report.min_margin, result.margin)
            report.unresolved += not result.margin_resolved
            if any(got[key] != value for key, value in want.items()):
                report.mismatches += 1
                if len(report.examples) < 5:
                    report.examples.append({"input": list(word), "expected": want,
                                            "got": {k: got[k] for k in want}})
        if progress:
            progress("verify", min(start + chunk, len(words)), len(words))
    report.seconds = time.perf_counter() - started
    return report
