"""Proven, not sampled: exact certificates over every word, rare paths included."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lat.api import compile_file, run
from lat.learner import learn
from lat.learner.traces import record_traces, sample_words
from lat.runtime.execute import rollout
from tests.test_learner import automaton_model


def consecutive(k: int):
    """Accepts iff the word holds k consecutive `a`s: state s_k is reached by one run only."""
    states = tuple(f"s{i}" for i in range(k)) + ("hit",)
    table = {(f"s{i}", "a"): states[i + 1] for i in range(k)}
    table.update({(f"s{i}", "b"): "s0" for i in range(k)})
    table.update({("hit", "a"): "hit", ("hit", "b"): "hit"})
    return automaton_model(states, ("a", "b"), table, accept=("hit",), name="rare")


@st.composite
def needle_automata(draw):
    """A random base automaton plus a chain that only one specific word walks: from q0 the
    needle's symbols lead through c1..ck to an accepting `goal`; any other symbol falls
    back to q0. `goal` is reached only by words that contain the needle."""
    alphabet = ("a", "b", "c")[: draw(st.integers(2, 3))]
    n_base = draw(st.integers(1, 4))
    base = tuple(f"q{i}" for i in range(n_base))
    needle = tuple(draw(st.lists(st.sampled_from(alphabet), min_size=6, max_size=9)))
    chain = tuple(f"c{i}" for i in range(1, len(needle))) + ("goal",)
    table = {(q, a): draw(st.sampled_from(base)) for q in base for a in alphabet}
    table[("q0", needle[0])] = chain[0]
    for i, state in enumerate(chain[:-1]):
        for a in alphabet:
            table[(state, a)] = chain[i + 1] if a == needle[i + 1] else "q0"
    for a in alphabet:
        table[("goal", a)] = "q0"
    model = automaton_model(base + chain, alphabet, table, accept=("goal",), name="needle")
    return model, needle


def contains(word, needle):
    n = len(needle)
    return any(word[i: i + n] == needle for i in range(len(word) - n + 1))


def same_decodes(a, b, words):
    return all(x.decoded == y.decoded for x, y in zip(rollout(a, words), rollout(b, words),
                                                        strict=True))


@settings(max_examples=6)
@given(needle_automata(), st.integers(0, 2**16))
def test_needle_missing_from_the_data_is_not_certified(case, seed):
    model, needle = case
    rng = np.random.default_rng(seed)
    words = [w for w in sample_words(model.interface, 300, len(needle) + 6, rng)
             if not contains(w, needle)]
    result = learn(model, traces=record_traces(model, words), domain_samples=50,
                   minimise=False)
    certificate = result.certificate
    assert certificate.scope == "exact"
    assert not certificate.identifiable and certificate.coverage_residual > 1e-8
    assert not result.model.info["certified"]["proven"]
    assert result.equivalence.method == "checked"


@settings(max_examples=6)
@given(needle_automata(), st.integers(0, 2**16))
def test_witness_design_certifies_needles_and_generalises(case, seed):
    model, needle = case
    result = learn(model, max_len=16, domain_samples=50, seed=seed)
    assert result.certificate.scope == "exact" and result.certificate.identifiable
    assert result.equivalence.proven and result.equivalence.method == "proven"
    assert result.model.info["certified"]["proven"]
    longest = 16  # the design words' length (max_len)
    rng = np.random.default_rng(seed)
    alphabet = model.interface.input_alphabet
    long_words = [tuple(alphabet[i] for i in rng.integers(0, len(alphabet), 10 * longest))
                  for _ in range(8)]
    needle_words = [w[:k] + needle + w[k:] for w in long_words[:4] for k in (0, 37)]
    words = long_words + needle_words + [needle, needle * 3]
    assert same_decodes(result.model, model, words)
    assert run(result.model, needle)["output"] == "accept"


def test_twenty_consecutive_as():
    """The issue's case: random words never hold 20 `a`s in a row. Exact certificate: not
    identifiable from random data; identifiable and proven with the witness design, and the
    learned model accepts the needle."""
    model = consecutive(20)
    random_only = learn(model, samples=300, max_len=64, design_rounds=0, domain_samples=100,
                        minimise=False)
    assert random_only.certificate.scope == "exact"
    assert not random_only.certificate.identifiable
    assert not random_only.model.info["certified"]["proven"]
    designed = learn(model, domain_samples=100)
    assert designed.certificate.identifiable and designed.equivalence.proven
    assert designed.equivalence.up_to_length is None or designed.equivalence.up_to_length > 1e6
    report = run(designed.model, "a" * 20)
    assert report["output"] == "accept" and report["certified"] is True
    assert same_decodes(designed.model, model, [("a",) * 20, ("b", *("a",) * 25, "b")])


def test_short_traces_without_a_program_certify_only_the_recordings(programs_dir, tmp_path):
    source = compile_file(programs_dir / "div3.lat").model
    traces = record_traces(source, sample_words(source.interface, 50, 2,
                                                np.random.default_rng(0)))
    alone = learn(traces=traces)
    assert alone.equivalent is None and alone.reproduces_traces is True
    assert alone.certificate.scope == "recorded" and "recorded inputs only" in (
        alone.certificate.domain)
    assert not alone.model.info["certified"]["proven"]
    with pytest.raises(ValueError, match="at most 2 symbols"):
        learn(traces=traces, domain_max_len=64)
    against = learn(source, traces=traces, domain_samples=200)
    assert against.certificate.scope == "exact"
    assert not against.certificate.identifiable and against.equivalent is False


def test_capitals_from_thirty_traces_is_neither_identifiable_nor_equivalent(programs_dir):
    source = compile_file(programs_dir / "capitals.lat").model
    traces = record_traces(source, sample_words(source.interface, 30, 1,
                                                np.random.default_rng(0)))
    assert len({w for w in traces.inputs}) < 69
    result = learn(source, traces=traces, domain_samples=200)
    assert result.certificate.scope == "exact"
    assert result.certificate.domain == "every key (69), and any other key"
    assert not result.certificate.identifiable and result.equivalent is False
    assert learn(traces=traces).equivalent is None


SHIPPED = ["parity.lat", "div3.lat", "aa_star.lat", "abab_star.lat", "ends_ab.lat",
           "no_aa.lat", "shift2.lat", "dyck1.lat", "capitals.lat", "busy.lat"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_programs_are_learned_with_an_exact_proof(programs_dir, name):
    source = compile_file(programs_dir / name).model
    result = learn(source, domain_samples=100)
    assert result.certificate.scope == "exact", result.certificate.notes
    assert result.certificate.identifiable, result.certificate.notes
    assert result.equivalence.proven, result.equivalence.statement
    interface = source.interface
    if interface.single_symbol_input:
        words = [(k,) for k in interface.sampling_alphabet]
    else:
        longest = min(8, interface.max_input_length or 8)
        words = [w for n in range(longest + 1)
                 for w in product(interface.input_alphabet, repeat=n)]
    assert same_decodes(result.model, source, words)


@settings(max_examples=15)
@given(st.integers(1, 5), st.integers(2, 3), st.integers(1, 120), st.integers(0, 2**16))
def test_exact_identifiable_never_coexists_with_a_wrong_decode(states, symbols, samples,
                                                                 seed):
    """Whatever the training data, `identifiable` on an exact scope with a proof means every
    enumerated input decodes as the source does (the test that catches a sampled domain
    passed off as proof)."""
    rng = np.random.default_rng(seed)
    names = tuple(f"q{i}" for i in range(states))
    alphabet = ("a", "b", "c")[:symbols]
    table = {(q, a): names[rng.integers(states)] for q in names for a in alphabet}
    model = automaton_model(names, alphabet, table, accept=names[::2])
    words = sample_words(model.interface, samples, int(rng.integers(1, 12)), rng)
    result = learn(model, traces=record_traces(model, words), domain_samples=30,
                   minimise=bool(seed % 2))
    if result.certificate.identifiable and result.equivalence.proven:
        every = [w for n in range(8) for w in product(alphabet, repeat=n)]
        assert same_decodes(result.model, model, every)


def test_design_flags_say_what_happened(programs_dir):
    mod5x5 = compile_file(programs_dir / "mod5x5.lat").model
    capped = learn(mod5x5, max_traces=5, domain_samples=20, minimise=False)
    assert capped.traces == 5 and capped.design["max_traces_reached"] is True
    assert not capped.certificate.identifiable  # 5 words cannot span a 3,901-dim domain
    source = compile_file(programs_dir / "div3.lat").model
    sampled = learn(source, exact=False, samples=5, max_len=3, design_rounds=1,
                    domain_samples=20, domain_max_len=8)
    assert sampled.certificate.scope == "sampled"
    assert sampled.design["design_converged"] in (True, False)
    given = learn(source, traces=record_traces(source, [("1", "0")]), domain_samples=20)
    assert given.design["design_converged"] is None
    assert given.design["max_traces_reached"] is False


@settings(max_examples=20)
@given(st.data())
def test_random_memories_and_machines_are_proven_on_every_input(data):
    """Enumerated domains: every input of a random memory (and any other key) or of a
    small random machine (≤ 5 cells) is covered, and every decode is proven equal — checked
    here by running both models on the whole domain."""
    from lat.compiler import compile_source
    from lat.testing import machine_sources, memory_sources

    kind = data.draw(st.sampled_from(["memory", "machine"]))
    strategy = (memory_sources(max_pairs=12) if kind == "memory" else
                machine_sources(max_states=3, max_symbols=3, max_steps=12, max_cells=5))
    source = compile_source(data.draw(strategy), "random.lat").model
    result = learn(source, domain_samples=20)
    assert result.certificate.scope == "exact", result.certificate.notes
    assert result.certificate.identifiable and result.equivalence.proven
    interface = source.interface
    if interface.single_symbol_input:
        words = [(k,) for k in interface.sampling_alphabet]
    else:
        words = [w for n in range((interface.max_input_length or 0) + 1)
                 for w in product(interface.input_alphabet, repeat=n)]
    assert same_decodes(result.model, source, words)
