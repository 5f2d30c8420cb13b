"""The check phase of `learn`: the learned model beside its source, or beside the recorded
runs when there is no source (docs/ARCHITECTURE.md, "The learner").

On an exact domain equivalence is proven (equivalence.py) and both models are also run on
the certification words and random words as a cross-check (a disagreement voids the
proof); on a sampled domain the same runs are the only evidence, labelled "checked".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lat.learner.counts import Domain
from lat.learner.domain import input_lengths, sample_words_of_lengths
from lat.learner.equivalence import Equivalence, prove_equivalence
from lat.learner.traces import Traces, rollouts
from lat.runtime.execute import RunResult
from lat.runtime.model import CompiledModel

Word = tuple[str, ...]
Progress = Callable[[str, int, int], None]

__all__ = ["Check", "check_with_source", "check_with_traces", "not_checked"]


@dataclass(frozen=True)
class Check:
    """What the check phase found: the equivalence, the verdict and the runs behind it."""

    equivalence: Equivalence
    equivalent: bool | None  # None: no source, or nothing was compared
    reproduces_traces: bool | None
    checked: int
    mismatches: list[Word]
    learned_runs: list[RunResult]


def check_with_source(source: CompiledModel, model: CompiledModel, domain: Domain, *,
                      count: int, max_len: int, seed: int, dtype: str,
                      progress: Progress | None, chunk: int = 256) -> Check:
    """Both models on the certification words (and random words on an exact domain), run
    `chunk` words at a time between progress reports."""
    words = _cross_check_words(source, domain, count, max_len, seed)
    options = {"dtype": dtype, "record": False, "progress": progress, "chunk": chunk}
    expected = rollouts(source, words, phase="check source", **options)
    learned = rollouts(model, words, phase="check", **options)
    mismatches = [e.input for e, r in zip(expected, learned, strict=True)
                  if not _same_run(e, r)]
    checked = len(words)
    if domain.scope == "exact" and domain.spans is not None:
        equivalence = prove_equivalence(source, model, domain.spans, checked=checked,
                                        mismatches=len(mismatches))
    else:
        equivalence = Equivalence(
            "checked", False, None, None, checked, len(mismatches),
            f"{len(mismatches)} of {checked} sampled inputs decode differently"
            if mismatches else f"all {checked} sampled inputs decode alike (not a proof)")
    return Check(equivalence, not mismatches, None, checked, mismatches, learned)


def check_with_traces(model: CompiledModel, traces: Traces, *, dtype: str,
                      progress: Progress | None) -> Check:
    """The learned model on the recorded inputs: are the recorded runs reproduced?"""
    learned = rollouts(model, traces.inputs, dtype=dtype, record=False, progress=progress,
                       phase="check")
    mismatches = [traces.inputs[i] for i, run in enumerate(learned)
                  if not _matches_recorded(traces, i, run)]
    checked = len(traces.inputs)
    equivalence = Equivalence(
        "recorded", False, None, None, checked, len(mismatches),
        "no source program: only the recorded runs were compared "
        f"({checked - len(mismatches)} of {checked} reproduced)")
    return Check(equivalence, None, not mismatches, checked, mismatches, learned)


def not_checked(why: str) -> Check:
    """No runs were compared (a budget ended the run first): no verdict either way."""
    return Check(Equivalence("not checked", False, None, None, 0, 0,
                             f"not checked: {why}; nothing was compared"),
                 None, None, 0, [], [])


def _cross_check_words(source: CompiledModel, domain: Domain, count: int, max_len: int,
                       seed: int) -> list[Word]:
    """Certification words plus random words: both models are run on these."""
    if domain.scope == "sampled":
        return domain.certify_words
    lengths = input_lengths(source, min(max_len, domain.max_length or max_len))
    extra = sample_words_of_lengths(source.interface, count, lengths,
                                    np.random.default_rng([seed, 6]))
    return [*domain.certify_words, *extra]


def _same_run(expected: RunResult, learned: RunResult) -> bool:
    return (expected.decoded == learned.decoded and expected.steps == learned.steps
            and expected.stopped_by == learned.stopped_by)


def _matches_recorded(traces: Traces, index: int, run: RunResult) -> bool:
    """Does a learned run reproduce recorded run `index` (decoded outputs, steps, stop)?"""
    interface = traces.interface
    outputs = torch.from_numpy(np.asarray(traces.outputs[index], dtype=np.float64))
    answers = outputs[len(interface.prompt) - 1:]
    for field_, offset in interface.output_slices():
        block = answers[:, offset: offset + field_.width]
        if block.shape[0] == 0:
            recorded: tuple[str, ...] = ()
        else:
            top = torch.topk(block, k=min(2, field_.width), dim=1)  # as the runtime decodes
            recorded = tuple(field_.values[i] for i in top.indices[:, 0].tolist())
        if run.decoded.get(field_.name) != recorded:
            return False
    if traces.steps is not None and traces.steps[index] != run.steps:
        return False
    return traces.stopped_by is None or traces.stopped_by[index] == run.stopped_by
