"""The exact domain: count-vector spans by fixpoint and by enumeration, against brute force."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lat.learner.counts import Hull as _Hull
from lat.learner.counts import Span as _Span
from lat.learner.domain import build_domain, pair_outputs
from lat.runtime.execute import rollout
from tests.test_learner import PARITY, automaton_model


def count_vectors(domain, model, words):
    """(current token, count vector) of every answer prefix of every word, by rollout."""
    spans = domain.spans
    index = {row.tobytes(): i for i, row in enumerate(spans.vocabulary)}
    out = []
    for run in rollout(model, words, dtype="fp64", record=True):
        counts = np.zeros(spans.vocabulary.shape[0])
        for t, row in enumerate(run.tokens):
            token = index[np.ascontiguousarray(row).tobytes()]  # KeyError: token outside U
            counts[token] += 1
            if t >= spans.prompt_length - 1:
                out.append((token, counts.copy()))
    return out


def residual(basis, v):
    return np.linalg.norm(v - basis @ (basis.T @ v)) / max(np.linalg.norm(v), 1e-300)


def test_span_and_hull_grow_only_with_new_directions():
    span = _Span(3)
    assert span.add(np.array([1.0, 0, 0])) and not span.add(np.array([2.0, 0, 0]))
    assert span.add(np.array([1.0, 1, 0])) and span.dim == 2
    assert not span.add(np.array([3.0, -4, 0]))
    hull = _Hull(np.array([1.0, 0, 0]))
    assert not hull.add(np.array([1.0, 0, 0]))  # the point itself: no direction
    assert hull.add(np.array([1.0, 1, 0])) and not hull.add(np.array([1.0, 3, 0]))
    assert hull.directions.dim == 1


def test_parity_spans_by_hand():
    """Parity: tokens bos, (even,0), (even,1), (odd,0), (odd,1). A prefix ending at (even,1)
    has n_bos = 1 and flow conservation between the states; its span has the dimension the
    brute-force rank reaches, and every word's prefix lies inside."""
    model = automaton_model(**PARITY)
    domain = build_domain(model, max_len=8, samples=100, seed=0)
    assert domain.scope == "exact" and domain.description.startswith("every word over {0, 1}")
    words = [w for n in range(11) for w in product("01", repeat=n)]
    per_token: dict[int, list[np.ndarray]] = {}
    for token, vector in count_vectors(domain, model, words):
        assert residual(domain.spans.bases[token], vector) < 1e-9
        per_token.setdefault(token, []).append(vector)
    for token, vectors in per_token.items():
        assert np.linalg.matrix_rank(np.array(vectors)) == domain.spans.bases[token].shape[1]
    assert domain.dimension == sum(b.shape[1] for b in domain.spans.bases.values())


@st.composite
def small_automata(draw):
    n_states = draw(st.integers(1, 5))
    alphabet = ("a", "b", "c")[: draw(st.integers(1, 3))]
    states = tuple(f"q{i}" for i in range(n_states))
    table = {(q, a): draw(st.sampled_from(states)) for q in states for a in alphabet}
    return automaton_model(states, alphabet, table, draw(st.sets(st.sampled_from(states))))


@settings(max_examples=30)
@given(small_automata())
def test_fixpoint_contains_every_prefix_and_witnesses_span_it(model):
    """Soundness: every prefix of every word (here: all words up to length 7) lies in the
    span the fixpoint computed for its current token; and the spanning design and
    certification words really span it (rank of their prefixes = the span's dimension)."""
    domain = build_domain(model, max_len=12, samples=100, seed=1)
    assert domain.scope == "exact"
    alphabet = model.interface.input_alphabet
    words = [w for n in range(8) for w in product(alphabet, repeat=n)]
    for token, vector in count_vectors(domain, model, words):
        assert residual(domain.spans.bases[token], vector) < 1e-9
    for chosen in (domain.design_words, domain.certify_words):
        per_token: dict[int, list[np.ndarray]] = {}
        for token, vector in count_vectors(domain, model, chosen):
            per_token.setdefault(token, []).append(vector)
        for token, basis in domain.spans.bases.items():
            assert np.linalg.matrix_rank(np.array(per_token[token])) == basis.shape[1]


def test_pair_outputs_rebuild_the_model_output():
    """y_t = Σ_u n_u G[:, u, c_t] on a finite vocabulary: checked against a rollout."""
    model = automaton_model(**PARITY)
    domain = build_domain(model, max_len=8, samples=100, seed=0)
    spans = domain.spans
    run = rollout(model, [tuple("1101")], dtype="fp64", record=True)[0]
    currents = sorted(spans.bases)
    G = pair_outputs(model, spans.vocabulary, currents)
    index = {row.tobytes(): i for i, row in enumerate(spans.vocabulary)}
    counts = np.zeros(spans.vocabulary.shape[0])
    for row, y in zip(run.tokens, run.outputs, strict=True):
        token = index[np.ascontiguousarray(row).tobytes()]
        counts[token] += 1
        np.testing.assert_allclose(G[:, :, currents.index(token)] @ counts, y, atol=1e-12)


def test_memory_and_machine_domains_are_enumerated(programs_dir):
    from lat.api import compile_file

    memory = compile_file(programs_dir / "capitals.lat").model
    domain = build_domain(memory, max_len=4, samples=100, seed=0)
    assert domain.scope == "exact"
    assert domain.description == "every key (69), and any other key"
    machine = compile_file(programs_dir / "busy.lat").model
    domain = build_domain(machine, max_len=8, samples=100, seed=0)
    assert domain.scope == "exact" and "every input of ≤ 8 cells" in domain.description
    assert domain.spans.max_tokens is not None


def test_over_budget_falls_back_to_a_labelled_sample(programs_dir):
    from lat.api import compile_file

    machine = compile_file(programs_dir / "increment.lat").model
    domain = build_domain(machine, max_len=6, samples=50, seed=0, budget=100)
    assert domain.scope == "sampled" and domain.description.endswith("not a proof")
    assert any("exceed the budget of 100" in note for note in domain.notes)


def test_history_dependent_source_gets_no_exact_graph():
    """A source whose decode depends on more than its current token (Q lets pair tokens
    attend to each other) is not analysed as a token graph: the proof from the weights
    fails, and the domain falls back to a labelled sample."""
    import dataclasses

    model = automaton_model(**PARITY)
    Q = model.Q.clone()
    Q[0, 1:, 1:] += 0.3  # every pair token now adds to every other pair's output
    domain = build_domain(dataclasses.replace(model, Q=Q), max_len=6, samples=50, seed=0)
    assert domain.scope == "sampled"
    assert any(note.startswith("token graph") for note in domain.notes)


@pytest.mark.parametrize("placement", ["weights", "context"])
def test_context_placement_automaton_is_a_token_graph(programs_dir, placement):
    from lat.api import compile_file

    model = compile_file(programs_dir / "div3.lat", placement=placement).model
    domain = build_domain(model, max_len=16, samples=50, seed=0)
    assert domain.scope == "exact"
    assert all(m >= 1.0 for m in domain.spans.margins.values())
    assert all(c == 0.0 for c in domain.spans.cross.values())


def test_a_fixpoint_over_its_work_budget_falls_back_to_a_sample(monkeypatch):
    import lat.learner.token_graph as token_graph

    monkeypatch.setattr(token_graph, "MAX_GRAPH_WORK", 10)
    domain = build_domain(automaton_model(**PARITY), max_len=6, samples=50, seed=0)
    assert domain.scope == "sampled"
    assert any("over its budget" in note for note in domain.notes)
