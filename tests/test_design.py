"""Data design (issue 5): few traces whose features span the domain, vs random sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lat.learner import domain_words, input_lengths, learn
from lat.learner.certificate import COVERAGE_TOL, sequence_residuals
from lat.learner.design import design_words, spanning_selection
from lat.learner.design_comparison import design_comparison, random_traces_to_cover
from lat.learner.solve import fit
from lat.learner.traces import record_traces, sample_words
from lat.runtime.execute import rollout
from tests.test_cli import PROGRAMS, lat
from tests.test_learner import PARITY, automaton_model, random_automaton


def test_designed_data_reach_coverage_with_fewer_traces_than_random():
    """Samples-to-identifiability on a random 10-state, 3-symbol automaton: the designed set
    covers an independent domain sample (a fit and the certificate's residual) with far
    fewer traces than random sampling needs; the random count is re-checked by two fits."""
    source = random_automaton(10, 3, seed=2)
    comparison = design_comparison(source, max_len=16, pool=1000, domain_samples=500,
                                   max_random=5000, check_random=True)
    print(f"\ndesigned {comparison.designed_traces} traces vs random "
          f"{comparison.random_traces} to cover {comparison.domain_sequences} domain words "
          f"({comparison.seconds})")
    assert comparison.designed_covered and comparison.designed_residual <= COVERAGE_TOL
    assert comparison.random_traces is not None and comparison.random_checked
    assert comparison.designed_traces < comparison.random_traces / 5
    assert comparison.design["nodes"] == 31  # bos + 10 states × 3 symbols, all reachable


def test_exploration_finds_every_token_of_an_automaton():
    source = automaton_model(**PARITY, name="parity")
    design = design_words(source, list(range(9)), pool=50, rounds=1)
    assert design.nodes == 5  # bos + 2 states × 2 symbols
    runs = rollout(source, design.words, dtype="fp64", record=True)
    domain = rollout(source, domain_words(source.interface, 200, range(9),
                                          np.random.default_rng(3)), dtype="fp64", record=True)
    fitted = fit([(r.tokens, r.outputs) for r in runs])
    assert sequence_residuals(fitted, [r.tokens for r in domain]).max() <= COVERAGE_TOL
    assert all(len(w) <= 8 for w in design.words) and len(design.words) <= 5


def test_random_traces_to_cover_is_the_first_covering_prefix():
    source = random_automaton(4, 2, seed=3)
    domain = [r.tokens for r in rollout(source, domain_words(
        source.interface, 100, range(9), np.random.default_rng(5)), dtype="fp64", record=True)]
    stream = sample_words(source.interface, 2000, 8, np.random.default_rng(6))
    needed, residual = random_traces_to_cover(source, domain, stream)
    assert needed is not None and residual <= COVERAGE_TOL

    def residual_of(words):
        traces = record_traces(source, words)
        fitted = fit(list(zip(traces.tokens, traces.outputs, strict=True)), minimise=False)
        return sequence_residuals(fitted, domain).max()

    assert residual_of(stream[:needed]) <= COVERAGE_TOL < residual_of(stream[: needed - 1])
    without = [tuple(s for s in w if s != "s1") for w in stream[:300]]
    assert random_traces_to_cover(source, domain, without)[0] is None  # never sees s1


def test_learn_with_qr_design():
    source = random_automaton(5, 3, seed=1)
    result = learn(source, design="qr", max_len=12, domain_samples=300, domain_max_len=12)
    assert result.equivalent, result.mismatches
    assert result.certificate.identifiable, result.certificate.notes
    report = result.to_json()
    assert report["design"] == "qr" and report["design_details"]["traces"] <= result.traces
    assert report["design_comparison"] is None  # not asked for
    assert result.traces < 1000  # learn's default random sample is 1000 words
    with pytest.raises(ValueError, match="design"):
        learn(source, design="lhs")
    with pytest.raises(ValueError, match="compare_random"):
        learn(source, compare_random=True)


def test_learn_compares_with_random_sampling_on_the_certification_domain():
    source = random_automaton(10, 3, seed=2)
    result = learn(source, design="qr", compare_random=True, max_len=16,
                   domain_samples=500, max_random=20000)
    comparison = result.to_json()["design_comparison"]
    assert result.certificate.identifiable and comparison["designed_covered"]
    assert comparison["designed_traces"] == result.traces
    assert comparison["random_covered"] and comparison["random_residual"] <= COVERAGE_TOL
    assert comparison["designed_traces"] < comparison["random_traces"]
    assert comparison["domain_sequences"] == result.certificate.domain_sequences


def test_cli_learn_design_reports_the_random_comparison(capsys):
    code, out, _ = lat("learn", str(PROGRAMS / "div3.lat"), "--compare-random", "--max-len",
                       "16", "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 0 and report["design"] == "qr"
    comparison = report["design_comparison"]
    assert {"designed_traces", "designed_covered", "random_traces", "random_covered",
            "random_residual", "max_random", "domain_sequences"} <= set(comparison)
    assert comparison["designed_traces"] == report["traces"]
    assert comparison["designed_covered"] and comparison["random_covered"]
    assert comparison["designed_traces"] <= comparison["random_traces"]
    code, out, _ = lat("learn", str(PROGRAMS / "div3.lat"), "--design", "--max-len", "16",
                       capsys=capsys)
    assert code == 0 and "designed traces" in out


def test_spanning_selection_covers_its_pool():
    source = random_automaton(4, 2, seed=3)
    traces = record_traces(source, sample_words(source.interface, 300, 10,
                                                np.random.default_rng(4)))
    chosen = spanning_selection(traces.tokens)
    assert 0 < len(chosen) < 300
    fitted = fit([(traces.tokens[i], traces.outputs[i]) for i in chosen])
    assert sequence_residuals(fitted, traces.tokens).max() <= 1e-8
    first = spanning_selection(traces.tokens, first=[299])
    assert first[0] == 299


def test_input_lengths_bound_the_design():
    source = random_automaton(3, 2, seed=0)
    lengths = input_lengths(source, 5)
    design = design_words(source, lengths, pool=100, rounds=1)
    assert design.words and all(len(w) <= 5 for w in design.words)


def test_a_design_round_takes_only_the_words_that_open_a_count_span():
    """`opening_words`: an ordered part of the design sample, after which no word of the
    sample opens the training count spans (so none is outside the training features)."""
    from lat.api import shipped_program
    from lat.compiler import compile_source
    from lat.learner.counts import CountCover
    from lat.learner.design import opening_words

    source = compile_source(shipped_program("increment.lat"), "increment.lat").model
    lengths = input_lengths(source, 8)
    start = domain_words(source.interface, 5, lengths, np.random.default_rng(0))
    sample = domain_words(source.interface, 400, lengths, np.random.default_rng(1))
    cover = CountCover(2048)
    for tokens in record_traces(source, start).tokens:
        cover.add(tokens)
    chosen = opening_words(source, cover, sample)
    assert 0 < len(chosen) < len(sample) // 4
    positions = [sample.index(w) for w in chosen]
    assert positions == sorted(positions)  # in the sample's order
    trained = record_traces(source, start + chosen).tokens
    fresh = CountCover(2048)
    for tokens in trained:
        fresh.add(tokens)
    runs = record_traces(source, sample).tokens
    assert not fresh.opens(runs).any()
    fitted = fit([(t, np.zeros((t.shape[0], 1))) for t in trained], heads=False)
    assert sequence_residuals(fitted, runs).max() <= COVERAGE_TOL


def test_a_sampled_machine_design_converges_in_count_space():
    from lat.api import shipped_program
    from lat.compiler import compile_source

    source = compile_source(shipped_program("increment.lat"), "increment.lat").model
    result = learn(source, exact=False, samples=40, max_len=8, domain_samples=200)
    assert result.design["traces_recorded"] == 40  # the random words rolled out …
    assert result.fit.sequences == result.traces  # … trained on where they open a span
    assert result.certificate.scope == "sampled"
    assert result.design["design_converged"] is True
    assert result.certificate.identifiable and result.equivalent is True
    assert result.traces < 200  # a few spanning words, not every uncovered one
