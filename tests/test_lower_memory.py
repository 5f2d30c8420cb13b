"""Memory lowering, both placements and both key embeddings, against `run_memory`.

Weights placement: V = Σ_k e_value(k) u_kᵀ, Q = I. Context placement: the paper's
associative-memory construction, the table in the prompt. Random key embeddings are checked
against a margin computed here from the artifact's own key vectors, and a too-small
dimension must fail at compile time naming the smallest dimension that works.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lat.api import run, run_report, shipped_program
from lat.compiler import LatError, compile_source
from lat.compiler.bind import bind_program
from lat.compiler.interpret import run_memory
from lat.compiler.ir import CheckedMemory
from lat.compiler.lower.memory import Embedding
from lat.compiler.printer import format_symbol
from lat.learner import learn
from lat.runtime.errors import InputError
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel
from lat.testing import memory_sources, symbol_texts

PLACEMENTS = ("weights", "context")


def memory_text(name: str, pairs: list[tuple[str, str]], default: str | None = None) -> str:
    lines = [f"  {format_symbol(k)} -> {format_symbol(v)}" for k, v in pairs]
    if default is not None:
        lines.append(f"  default: {format_symbol(default)}")
    return f"memory {name} {{\n" + "\n".join(lines) + "\n}\n"


def generated(pairs: int, values: int, name: str = "gen") -> str:
    return memory_text(name, [(f"key{i}", f"value{i % values}") for i in range(pairs)])


def outputs(model: CompiledModel, keys: list[str]) -> list[str]:
    """Every key in one batch, read as `lat run --json` outputs."""
    return [run_report(model, r)["output"] for r in rollout(model, [(k,) for k in keys])]


def check_memory(model: CompiledModel, memory: CheckedMemory, absent: list[str]) -> None:
    keys = list(memory.keys)
    assert outputs(model, keys) == [run_memory(memory, k).output for k in keys]
    absent = [k for k in absent if k not in memory.table]
    if memory.default is not None:
        if absent:
            assert outputs(model, absent) == [memory.default] * len(absent)
        return
    for key in absent:
        with pytest.raises(InputError):
            run_memory(memory, key)
        with pytest.raises(InputError) as caught:
            run(model, [key])
        assert "\n" not in str(caught.value)


@settings(max_examples=40)
@given(memory_sources(min_pairs=1, max_pairs=60),
       st.lists(symbol_texts() | st.text(max_size=6), max_size=4))
def test_memories_equal_the_interpreter(text: str, absent: list[str]) -> None:
    for placement in PLACEMENTS:
        compilation = compile_source(text, "random.lat", placement=placement)
        memory = compilation.declaration
        assert 1 <= len(memory.keys) <= 60
        check_memory(compilation.model, memory, [*absent, "<other>", "<k0>", "<v0>", ""])
        assert compilation.model.info["decode_margin"] == 1.0


def test_capitals_in_both_placements() -> None:
    text = shipped_program("capitals.lat")
    for placement in PLACEMENTS:
        compilation = compile_source(text, "capitals.lat", placement=placement)
        check_memory(compilation.model, compilation.declaration, ["atlantis", "France", ""])
        assert run(compilation.model, "france")["output"] == "paris"


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_absent_key_without_default_is_an_input_error(placement: str) -> None:
    model = compile_source(generated(5, 2), "gen.lat", placement=placement).model
    for key in ["key5", "<k0>", "<other>", "value0", ""]:
        with pytest.raises(InputError) as caught:
            run(model, key)
        assert "\n" not in str(caught.value)


def test_sizes_one_head_and_exact_tables() -> None:
    compilation = compile_source(memory_text("m", [("a", "x"), ("b", "y"), ("c", "x")], "z"),
                                 "m.lat")
    model = compilation.model
    assert (model.heads, model.d, model.d_out) == (1, 4, 3)  # keys + other; values x, y, z
    assert model.info["decode_margin"] == 1.0
    assert np.array_equal(model.Q[0].numpy(), np.eye(4))
    assert np.array_equal(model.V[0].numpy(), np.array([[1, 0, 1, 0], [0, 1, 0, 0],
                                                        [0, 0, 0, 1]], dtype=np.float32))


# -- random key embeddings ------------------------------------------------------------------


def independent_margin(vectors: np.ndarray, value_of_slot: list[str]) -> float:
    """min over query slots of (score of its value − best other score), by loops."""
    values = sorted(set(value_of_slot))
    worst = np.inf
    for q, query in enumerate(vectors):
        scores = {v: 0.0 for v in values}
        for key, value in zip(vectors, value_of_slot, strict=True):
            scores[value] += float(np.dot(key, query))
        correct = scores[value_of_slot[q]]
        others = [s for v, s in scores.items() if v != value_of_slot[q]]
        worst = min(worst, correct - max(others) if others else correct)
    return worst


def key_vectors(model: CompiledModel) -> np.ndarray:
    field = model.interface.token_field("key")
    assert field.kind == "embedding"
    return np.array(field.vectors, dtype=np.float64)


@pytest.mark.parametrize(("pairs", "values", "default", "dim", "seed"),
                         [(10, 3, None, 48, 0), (20, 5, "none", 200, 7), (6, 1, None, 16, 1)])
def test_random_keys_margin_is_exact(pairs: int, values: int, default: str | None, dim: int,
                                     seed: int) -> None:
    entries = [(f"key{i}", f"value{i % values}") for i in range(pairs)]
    text = memory_text("rand", entries, default)
    compilation = compile_source(text, "rand.lat", embedding=Embedding("random", dim, seed))
    model, memory = compilation.model, compilation.declaration
    vectors = key_vectors(model)
    assert vectors.shape == (pairs + (default is not None), dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    slot_values = [v for _, v in entries] + ([default] if default is not None else [])
    margin = independent_margin(vectors, slot_values)
    assert model.info["decode_margin"] == pytest.approx(margin, abs=1e-9)
    # the margin is exact, not a bound: the runtime sees it on the worst key
    keys = list(memory.keys) + (["not-a-key"] if default is not None else [])
    results = rollout(model, [(k,) for k in keys])
    assert min(r.margin for r in results) == pytest.approx(margin, abs=1e-4)
    check_memory(model, memory, ["not-a-key", ""])


def suggested_dim(error: LatError) -> int:
    found = re.search(r"--dim (\d+)", str(error))
    assert found, str(error)
    return int(found.group(1))


def test_too_small_random_dimension_names_the_smallest_that_works() -> None:
    text = generated(50, 7)
    seed = 3
    with pytest.raises(LatError) as caught:
        compile_source(text, "gen.lat", embedding=Embedding("random", 8, seed))
    assert "gen.lat:1:1" in str(caught.value)
    best = suggested_dim(caught.value)
    assert best > 8
    compilation = compile_source(text, "gen.lat", embedding=Embedding("random", best, seed))
    memory = compilation.declaration
    assert compilation.model.info["decode_margin"] > 0
    assert compilation.model.info["decode_margin"] == pytest.approx(
        independent_margin(key_vectors(compilation.model), [memory.table[k] for k in
                                                            memory.keys]), abs=1e-9)
    check_memory(compilation.model, memory, ["key50"])
    # every dimension between the one asked for and the suggestion fails (same seed)
    for dim in range(9, best):
        with pytest.raises(LatError):
            compile_source(text, "gen.lat", embedding=Embedding("random", dim, seed))


def test_random_keys_in_context_placement() -> None:
    text = generated(5, 2)
    with pytest.raises(LatError) as caught:
        compile_source(text, "gen.lat", placement="context",
                       embedding=Embedding("random", 3, 0))
    best = suggested_dim(caught.value)
    compilation = compile_source(text, "gen.lat", placement="context",
                                 embedding=Embedding("random", best, 0))
    vectors = key_vectors(compilation.model)
    gram = np.abs(vectors @ vectors.T)
    np.fill_diagonal(gram, 0.0)
    bound = 1.0 - 2.0 * gram.sum(axis=0).max()
    assert compilation.model.info["decode_margin"] == pytest.approx(bound, abs=1e-9)
    assert bound > 0
    check_memory(compilation.model, compilation.declaration, ["key9"])
    # The context bound is searched by doubling and bisection: the suggestion is a working
    # dimension near the smallest, not a proven minimum (the message says "works").
    assert "works for this seed" in str(caught.value)


# -- the context executor runs another memory of the same sizes ----------------------------


def test_executor_of_one_memory_runs_another() -> None:
    first = memory_text("first", [("a", "x"), ("b", "y"), ("c", "x")], "none")
    second = memory_text("second", [("red", "stop"), ("green", "go"), ("amber", "go")],
                         "wait")
    executor = compile_source(first, "first.lat", placement="context").artifact
    memory = compile_source(second, "second.lat").declaration
    bound = bind_program(executor, memory)
    assert bound.V is executor.V and bound.Q is executor.Q
    check_memory(bound, memory, ["blue", "a", "x", "<other>", ""])
    assert run(bound, "red")["output"] == "stop"
    assert run(bound, "purple")["output"] == "wait"


@settings(max_examples=25)
@given(memory_sources(min_pairs=1, max_pairs=40), st.data())
def test_executor_runs_a_relabelled_shuffled_memory(text: str, data: st.DataObject) -> None:
    executor = compile_source(text, "a.lat", placement="context").artifact
    first = compile_source(text, "a.lat").declaration
    values = list(first.table.values())
    shuffled = data.draw(st.permutations(values), label="values")
    renamed = {v: f"v_{i}" for i, v in enumerate(first.values)}
    pairs = [(f"k_{i}", renamed[v]) for i, v in enumerate(shuffled)]
    default = renamed[first.default] if first.default is not None else None
    other = compile_source(memory_text("other", pairs, default), "b.lat").declaration
    assert (len(other.keys), len(other.values)) == (len(first.keys), len(first.values))
    check_memory(bind_program(executor, other), other, ["k_x", *first.keys])


# -- relearned ------------------------------------------------------------------------------


def test_relearned_memory_is_equivalent() -> None:
    model = compile_source(generated(50, 9), "gen.lat").model
    result = learn(model, samples=200, design_rounds=1)
    assert result.equivalent, result.mismatches
    assert result.certificate.identifiable
    assert result.train_max_abs_error < 1e-6
    memory = compile_source(generated(50, 9), "gen.lat").declaration
    check_memory(result.model, memory, ["key50"])


def test_relearned_capitals_is_equivalent_on_its_keys() -> None:
    compilation = compile_source(shipped_program("capitals.lat"), "capitals.lat")
    memory = compilation.declaration
    assert len(memory.keys) == 69
    result = learn(compilation.model, samples=300, design_rounds=1)
    assert result.equivalent, result.mismatches
    keys = list(memory.keys)
    assert outputs(result.model, keys) == [memory.table[k] for k in keys]


def test_relearned_memory_keeps_its_default() -> None:
    compilation = compile_source(memory_text("m", [("a", "x"), ("b", "y")], "z"), "m.lat")
    result = learn(compilation.model, samples=50)
    assert run(compilation.model, "q")["output"] == "z"
    # either the default is learned, or the result does not claim equivalence for it
    # (today it claims equivalent and identifiable, and the learned model answers x)
    assert run(result.model, "q")["output"] == "z" or not result.equivalent
