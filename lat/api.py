"""The public API: compile, load, run, verify, learn — what the `lat` command is made of.

What depends on a program's kind (its report fields, its verify domain, its step bound) is
asked of the kind registry (`lat.compiler.kinds`): by the checked declaration, or by the
`interface.kind` label an artifact carries.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lat.compiler import (  # read_source, check_file: re-exported, light (`lat check`)
    Compilation,
    bind_default_program,
    check_file,
    compile_source,
    read_source,
)
from lat.compiler.bind import bind_program
from lat.compiler.ir import Checked
from lat.compiler.kinds import kind_named, kind_of
from lat.compiler.kinds import verify_words as verify_words  # public here: the verify domain
from lat.compiler.lower import DEFAULT_MAX_MEMORY
from lat.compiler.lower.memory import Embedding
from lat.runtime.errors import DEFAULT_MAX_STEPS, InputError, PrecisionError, ResourceError
from lat.runtime.execute import RunResult, rollout
from lat.runtime.model import CompiledModel
from lat.runtime.storage import is_artifact

Progress = Callable[[str, int, int], None]


def compile_file(
    path: str | Path,
    *,
    name: str | None = None,
    placement: str = "weights",
    minimise: bool = False,
    embedding: Embedding | None = None,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
) -> Compilation:
    """Read, check and compile one declaration of a `.lat` file."""
    return compile_source(read_source(path), str(path), name=name, placement=placement,
                          minimise=minimise, embedding=embedding, max_memory=max_memory)


def shipped_program(filename: str) -> str:
    """The text of a program shipped in programs/ (package data once installed)."""
    try:
        from importlib import resources

        return resources.files("lat.programs").joinpath(filename).read_text(encoding="utf-8")
    except ModuleNotFoundError:  # running from a source tree that is not installed
        path = Path(__file__).resolve().parent.parent / "programs" / filename
        return path.read_text(encoding="utf-8")


def load_model(
    path: str | Path,
    *,
    name: str | None = None,
    placement: str | None = "weights",
    program: str | Path | None = None,
    program_name: str | None = None,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
) -> CompiledModel:
    """An artifact (recognised by its safetensors header, whatever the file is called) is
    loaded; anything else is read as a `.lat` program and compiled on the fly.

    `program` binds a context-placement artifact to the program in that file (its table
    becomes the prompt); without it, such an artifact runs the program it was compiled from.
    `name` and `placement` choose what to compile from a program; for
    an artifact they have no meaning and are refused rather than ignored. `placement=None`
    is the default placement, "weights".
    """
    path = Path(path)
    if is_artifact(path):
        if name is not None:
            raise InputError(f"--name chooses a declaration of a .lat program; {path} is an "
                             "artifact holding one program")
        if placement not in (None, "weights"):
            raise InputError(f"--program-in applies when compiling a .lat program; {path} is "
                             "an artifact, compiled already")
        model = CompiledModel.load(path)
    else:
        model = compile_file(path, name=name, placement=placement or "weights",
                             max_memory=max_memory).model
    if program_name is not None and program is None:
        raise InputError("--program-name chooses a declaration of --program: give --program")
    if program is not None:
        model = bind_program(model, check_file(program).get(program_name))
    else:  # a context-placement executor runs the program it was compiled from
        model = bind_default_program(model)
    return model


def word_of(model: CompiledModel, word: str | Sequence[str]) -> tuple[str, ...]:
    """A command-line string split per the README's input rules, or a symbol sequence, checked."""
    if isinstance(word, str):
        return model.interface.split_word(word)
    symbols = tuple(word)
    model.interface.check_word(symbols)
    return symbols


def run_report(model: CompiledModel, result: RunResult) -> dict[str, object]:
    """The `lat run --json` object (the README's command line) for one execution; the
    program's kind reads its own fields off the run (`Kind.readout`)."""
    interface = model.interface
    report: dict[str, object] = {
        "program": interface.program,
        "kind": interface.kind,
        "input": list(result.input),
        "output": result.value(interface.result_field),
        "steps": result.steps,
        "margin": result.margin,
    }
    report.update(kind_named(interface.kind).readout(interface, result))
    report["margin_resolved"] = result.margin_resolved
    return report


def worst_case_steps(model: CompiledModel, longest_input: int) -> int:
    """The most steps a run can take: a machine's step bound, one lookup for a memory, one
    step per input symbol for an automaton."""
    interface = model.interface
    return kind_named(interface.kind).worst_case_steps(interface, longest_input).steps


def check_steps(model: CompiledModel, longest_input: int, max_steps: int | None) -> int:
    """The worst case, or ResourceError (one line naming it and the flag) above the limit."""
    interface = model.interface
    bound = kind_named(interface.kind).worst_case_steps(interface, longest_input)
    worst = bound.steps
    if max_steps is not None and worst > max_steps:
        raise ResourceError(
            f"program '{interface.program}' may take up to {worst:,} steps ({bound.why} "
            f"{worst:,}), above --max-steps {max_steps:,}; raise --max-steps to allow it "
            f"(at ~0.5 ms a step, about {worst * 5e-4 / 60:,.0f} min)")
    return worst


def run(
    model: CompiledModel,
    word: str | Sequence[str],
    *,
    reference: bool = False,
    kernel: str = "auto",
    device: str = "auto",
    weights: str = "fp32",
    max_steps: int | None = DEFAULT_MAX_STEPS,
    on_unresolved: str = "flag",
) -> dict[str, object]:
    """Execute one input and return the `lat run --json` object.

    A decode margin the number format cannot resolve is reported (`margin_resolved`
    false) with `on_unresolved="flag"`, and refused with PrecisionError with "raise".

    A run takes at most `max_steps` steps (None: no limit). An automaton's input longer than
    that is refused before running; a machine whose bound is above it runs up to the limit
    and, unless it has stopped by then, ends in ResourceError rather than in an answer.
    """
    symbols = word_of(model, word)
    worst = worst_case_steps(model, len(symbols))
    limited = model
    if max_steps is not None and worst > max_steps:
        # a kind that can stop its runs early (a machine) runs up to the limit; any other
        # is refused before running
        cap = kind_named(model.interface.kind).cap_steps
        capped = cap(model.interface, max_steps) if cap is not None else None
        if capped is None:
            check_steps(model, len(symbols), max_steps)
        limited = dataclasses.replace(model, interface=capped)
    result = rollout(limited, [symbols], reference=reference, kernel=kernel, device=device,
                     weights=weights)[0]
    report = run_report(model, result)
    if on_unresolved == "raise" and not report["margin_resolved"]:
        raise PrecisionError(
            f"decode margin {report['margin']:.3g} is below what the number format "
            "resolves; the answer cannot be trusted")
    if limited is not model and report["status"] == "step_limit":
        raise ResourceError(
            f"program '{model.interface.program}' took --max-steps {max_steps:,} steps "
            f"without stopping (its own bound: steps {worst:,}); no answer: raise "
            "--max-steps to run it further")
    certified = certification(model, symbols)
    if certified is not None:
        report["certified"], report["certified_reason"] = certified
    return report


def certification(model: CompiledModel, symbols: Sequence[str]) -> tuple[bool, str] | None:
    """Whether a learned artifact's certificate covers this input, and why (None for a
    compiled artifact, which is exact by construction and `lat verify`).

    A learned artifact carries what `learn` proved (info "certified"): the scope, the
    domain and the input length up to which every decode is proven equal to its source's."""
    if model.info.get("origin") != "learned":
        return None
    certified = model.info.get("certified")
    if not isinstance(certified, dict):
        return False, "this learned artifact carries no certificate"
    if not certified.get("proven"):
        reason = str(certified.get("reason") or "equivalence was not proven")
        longest = certified.get("max_input_length")
        if longest is not None and len(symbols) > int(longest):  # not even sampled
            reason = (f"the input has {len(symbols)} symbols, longer than any input the "
                      f"certificate speaks of (≤ {int(longest)}); {reason}")
        return False, reason
    bound = certified.get("up_to_length")
    if bound is not None and len(symbols) > int(bound):
        return False, (f"the input has {len(symbols)} symbols; equivalence is proven up to "
                       f"{bound}")
    within = f" up to {int(bound):,} symbols" if bound is not None else ""
    return True, f"proven over {certified.get('domain')}{within}"


def expected_report(declaration: Checked, word: tuple[str, ...]) -> dict[str, object]:
    """What the reference interpreter says the run report must contain."""
    return kind_of(declaration).expected(declaration, word)


def verify_domain(
    declaration: Checked, max_len: int, samples: int, seed: int
) -> tuple[list[tuple[str, ...]], str]:
    """The inputs `verify` checks: words (automata, machines) or keys (memories)."""
    return kind_of(declaration).verify_inputs(declaration, max_len, samples, seed)


def effective_max_len(declaration: Checked, max_len: int) -> int:
    """The longest input `verify_domain` can produce for this bound."""
    return kind_of(declaration).longest_input(declaration, max_len)


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
    inputs: Sequence[str] | None = None,
    max_steps: int | None = DEFAULT_MAX_STEPS,
) -> VerifyReport:
    """Run the compiled model and the interpreter on the domain and count disagreements.

    `inputs` (command-line strings) replaces the domain; the report's `max_len` is the
    longest length actually in scope (a machine's tape caps it; a memory's input is one key).
    A domain whose runs may take more than `max_steps` steps is refused before any run.
    """
    started = time.perf_counter()
    model, declaration = compilation.model, compilation.declaration
    if inputs is not None:  # the user's own list: every line one input, split like --input
        words = [word_of(model, text) for text in inputs]
        domain, longest = "given", max((len(word) for word in words), default=0)
    else:
        longest = effective_max_len(declaration, max_len)
        check_steps(model, longest, max_steps)
        words, domain = verify_domain(declaration, max_len, samples, seed)
    check_steps(model, longest, max_steps)
    report = VerifyReport(model.interface.program, 0, 0, float("inf"), domain, longest)
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
