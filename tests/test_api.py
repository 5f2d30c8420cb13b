"""The public API: domains, verification that can fail, shipped programs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import lat
from lat.api import shipped_program, verify
from lat.api import verify_words as domain_words
from lat.compiler import compile_source
from lat.runtime.errors import PrecisionError
from lat.runtime.model import CompiledModel
from tests.runtime_fixtures import near_tie


def test_domain_is_exhaustive_when_small_and_sampled_otherwise():
    words, kind = domain_words(("a", "b"), 3, 100)
    assert kind == "exhaustive" and len(words) == 15 and len(set(words)) == 15
    words, kind = domain_words(("a", "b", "c"), 12, 500, seed=1)
    assert kind == "sampled" and len(words) == 500
    assert max(map(len, words)) <= 12 and min(map(len, words)) >= 0
    assert words == domain_words(("a", "b", "c"), 12, 500, seed=1)[0]  # reproducible


def test_verify_catches_a_wrong_weight():
    compilation = compile_source(shipped_program("div3.lat"), "div3.lat")
    model = compilation.model
    V = model.V.clone()
    column = model.interface.token_offset("state_symbol")  # (r0, 0) -> r0 ...
    V[0, :, column] = torch.roll(V[0, :, column], shifts=1)  # ... now points elsewhere
    broken = dataclasses.replace(compilation, model=CompiledModel(V, model.Q, model.interface))
    report = verify(broken, max_len=6)
    assert report.mismatches > 0 and not report.ok and report.examples
    assert verify(compilation, max_len=6).ok


def test_top_level_api(tmp_path):
    path = tmp_path / "p.lat"
    path.write_text(shipped_program("parity.lat"))
    compilation = lat.compile_file(path)
    report = lat.run(compilation.model, "11")
    assert report["output"] == "accept" and report["trace"] == ["even", "odd", "even"]
    assert lat.verify(compilation, max_len=5).ok


def test_run_flags_or_refuses_a_margin_the_format_cannot_resolve():
    """bf16 rounds a 0.002 gap away: `run` reports it, and refuses it when asked to."""
    report = lat.api.run(near_tie(0.002), "aab", weights="bf16")
    assert report["margin_resolved"] is False
    with pytest.raises(PrecisionError, match="cannot be trusted"):
        lat.api.run(near_tie(0.002), "aab", weights="bf16", on_unresolved="raise")
    assert lat.api.run(near_tie(0.002), "aab", on_unresolved="raise")["margin_resolved"]


def test_a_proof_covers_inputs_up_to_its_length_bound_and_no_further():
    """`lat run` may call an answer certified only within the length the proof reaches."""
    from lat.learner import learn

    source = compile_source(shipped_program("parity.lat"), "parity.lat").model
    learned = learn(source, seed=0).model
    certified, reason = lat.api.certification(learned, tuple("1101"))
    assert certified and "up to" in reason and "symbols" in reason
    bound = dict(learned.info["certified"], up_to_length=3)
    shortened = dataclasses.replace(learned, info={**learned.info, "certified": bound})
    assert lat.api.certification(shortened, tuple("110"))[0] is True
    certified, reason = lat.api.certification(shortened, tuple("1101"))
    assert not certified and "proven up to 3" in reason
