"""The sparse gauge: few heads with the training outputs of Algorithm 1 (lat.learner.gauge)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lat import api
from lat.learner.gauge import Pattern, _Rows, coordinate_groups, sparse_heads
from lat.learner.solve import fit, mhla_outputs, minimal_heads
from lat.learner.traces import record_traces, sample_words

BUSY = "programs/busy.lat"  # a 4-state machine on 8 cells: 5 compiled heads


@pytest.fixture(scope="module")
def busy():
    model = api.compile_file(BUSY).model
    words = sample_words(model.interface, 400, 8, np.random.default_rng(0))
    traces = record_traces(model, words)
    return model, traces, fit(traces, minimise=False)


def _max_error(V, Q, traces) -> float:
    learned = mhla_outputs(V, Q, traces.tokens)
    return max(float(np.abs(a - b).max()) for a, b in zip(learned, traces.outputs, strict=True))


def test_coordinate_groups_follow_the_token_fields():
    model = api.compile_file(BUSY).model
    groups = coordinate_groups(model.interface)
    widths = [f.width for f in model.interface.token_fields]
    assert groups.size == model.interface.d
    assert np.bincount(groups).tolist() == widths
    assert np.all(np.diff(groups) >= 0)


def test_pattern_allows_only_its_value_fields_and_query_pairs():
    groups = np.array([0, 1, 1, 2, 2])
    pattern = Pattern(groups, frozenset({1}), frozenset({(2, 0)}))
    m, qk, ql = np.array([1, 2, 1, 3]), np.array([3, 3, 1, 4]), np.array([0, 0, 0, 0])
    assert pattern.allows(m, qk, ql).tolist() == [True, True, False, False]
    described = pattern.describe(["bos", "cell", "symbol"])
    assert described == "values read cell; queries pair symbol→bos"


def test_gauge_reaches_the_compiled_head_count_with_the_same_outputs(busy):
    """Algorithm 1 spreads the fit over the data's null space (17 heads); the gauge's
    sparse member of the same solution set needs no more heads than the compiler's."""
    model, traces, fitted = busy
    assert fitted.heads > model.V.shape[0]
    gauge = sparse_heads(fitted.coefficients, fitted.blocks, fitted.support_block,
                         fitted.support_position, coordinate_groups(model.interface))
    assert gauge is not None and gauge.complete
    assert gauge.heads <= model.V.shape[0]
    assert _max_error(gauge.V, gauge.Q, traces) <= 1e-10
    # the value maps read one field, the query maps only the fields the pattern names
    fields = coordinate_groups(model.interface)
    read = np.flatnonzero(np.abs(gauge.V).sum(axis=(0, 1)) > 0)
    assert set(fields[read]) <= set(gauge.pattern.value_fields)
    k, l = np.nonzero(np.abs(gauge.Q).sum(axis=0) > 0)
    assert {(int(a), int(b)) for a, b in zip(fields[k], fields[l], strict=True)} <= \
        set(gauge.pattern.query_pairs)


def test_gauge_heads_agree_with_algorithm_1_off_the_training_set(busy):
    """Both head sets meet the same constraints on the training span, so they agree on
    inputs whose features lie in it — here fresh words of the same lengths."""
    model, _, fitted = busy
    gauge = sparse_heads(fitted.coefficients, fitted.blocks, fitted.support_block,
                         fitted.support_position, coordinate_groups(model.interface))
    fresh = record_traces(model, sample_words(model.interface, 100, 8,
                                              np.random.default_rng(1)))
    ours = mhla_outputs(gauge.V, gauge.Q, fresh.tokens)
    theirs = mhla_outputs(fitted.V, fitted.Q, fresh.tokens)
    assert max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True)) <= 1e-9


def test_a_block_without_its_rows_is_infeasible(busy):
    """The feasibility check refuses a p that cannot meet a block's constraints."""
    _, _, fitted = busy
    rows = _Rows(fitted.coefficients, fitted.blocks, fitted.support_block,
                 fitted.support_position)
    b = max(range(len(rows.targets)), key=lambda i: float(np.abs(rows.targets[i]).max()))
    every = np.ones(rows.n, dtype=bool)
    assert rows.solve(every, [b])[0]
    assert not rows.solve(np.zeros(rows.n, dtype=bool), [b])[0]
    feasible, values = rows.solve(every, [b])
    np.testing.assert_allclose(rows.bases[b].T @ values[b], rows.targets[b], atol=1e-12)


def test_minimal_heads_starts_from_the_gauge_given_the_fields(busy):
    model, traces, fitted = busy
    without = minimal_heads(fitted, traces, seconds=0.0)
    assert without.heads == fitted.heads  # no time: Algorithm 1's heads kept
    found = minimal_heads(fitted, traces, seconds=20.0,
                          groups=coordinate_groups(model.interface))
    assert found.heads <= model.V.shape[0]
    assert found.train_max_abs_error <= 1e-8
    assert _max_error(found.V, found.Q, traces) <= 1e-8


def test_lat_learn_gives_a_machine_its_compiled_head_count(tmp_path, capsys):
    """End to end: `lat learn` on a shipped machine keeps no more heads than the compiler
    made and proves equivalence on the exact domain (the search after the gauge finds one
    dense head here; the gauge's own heads are checked against the artifact size below)."""
    import json

    from lat.cli import main

    compiled = api.compile_file(BUSY).model
    compiled.save(tmp_path / "compiled.safetensors")
    learned = tmp_path / "learned.safetensors"
    assert main(["learn", BUSY, "-o", str(learned), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heads_before_minimising"] > 16  # Algorithm 1: the gauge's case
    assert report["heads"] <= compiled.V.shape[0]
    assert report["equivalent"] is True and report["certificate"]["scope"] == "exact"
    assert report["equivalence"]["proven"] is True
    search = report["head_search"]  # what was tried, in the Interface's field names
    assert search["algorithm1_heads"] == report["heads_before_minimising"]
    gauge = search["gauge"]
    assert gauge["complete"] is True and gauge["heads"] <= compiled.V.shape[0]
    names = [f.name for f in compiled.interface.token_fields]
    assert gauge["pattern"].startswith("values read ")
    assert any(name in gauge["pattern"] for name in names)
    assert search["kept"] in ("gauge", "alternating")
    assert search[search["kept"]]["heads"] == report["heads"]
    assert main(["learn", BUSY, "-o", str(learned)]) == 0  # the table names the gauge
    assert "sparse gauge" in capsys.readouterr().out


def test_gauge_heads_store_no_larger_than_the_compiled_model(busy, tmp_path):
    """The gauge's heads are as sparse as W: stored, no more than twice the compiled
    model's bytes (which are float32 where learned weights are float64)."""
    from lat.runtime.model import CompiledModel

    model, _, fitted = busy
    gauge = sparse_heads(fitted.coefficients, fitted.blocks, fitted.support_block,
                         fitted.support_position, coordinate_groups(model.interface))
    learned = CompiledModel(V=torch.from_numpy(gauge.V), Q=torch.from_numpy(gauge.Q),
                            interface=model.interface, info={"origin": "learned"})
    model.save(tmp_path / "compiled.safetensors")
    learned.save(tmp_path / "learned.safetensors")
    sizes = [(tmp_path / f"{n}.safetensors").stat().st_size for n in ("compiled", "learned")]
    assert sizes[1] <= 2 * sizes[0]


def test_the_gauge_reserves_its_memory_under_a_budget(busy):
    """Under a memory budget too small for its block copies the gauge does not start."""
    from lat.learner.budget import Budget, MemoryUp
    from lat.learner.gauge import gauge_bytes

    model, _, fitted = busy
    needed = gauge_bytes([np.shape(b.basis) for b in fitted.blocks])
    assert needed >= 8 * sum(np.size(b.basis) for b in fitted.blocks)
    budget = Budget(None, 1)  # one byte: nothing fits beside the resident memory
    with budget.in_force(), pytest.raises(MemoryUp):
        sparse_heads(fitted.coefficients, fitted.blocks, fitted.support_block,
                     fitted.support_position, coordinate_groups(model.interface))


def test_a_column_drop_checked_on_the_null_space_agrees_with_a_block_solve(busy):
    """`_Feasible.without` decides a drop from the block's null space alone; on random
    drops it agrees with the direct block solve, and the p it carries meets the block's
    constraints exactly."""
    from lat.learner.gauge import _Feasible, _variants

    model, _, fitted = busy
    rows = _Rows(fitted.coefficients, fitted.blocks, fitted.support_block,
                 fitted.support_position)
    pattern = _variants(rows, coordinate_groups(model.interface), None)[0]
    free = rows.free_rows(pattern.allows(rows.m, rows.qk, rows.ql))
    states = [_Feasible.start(rows, b, free) for b in range(len(rows.rows_of))]
    b = max(range(len(states)), key=lambda i: states[i].null.shape[1])
    state, rng, agreed = states[b], np.random.default_rng(0), 0
    for _ in range(40):
        if state.rows.size < 4:
            break
        lost = np.sort(rng.choice(state.rows, size=int(rng.integers(1, 4)), replace=False))
        reduced = state.without(lost, rows.tol * 1e-2, rows.largest)
        remaining = np.zeros(rows.n, dtype=bool)
        remaining[np.setdiff1d(state.rows, lost)] = True
        assert (reduced is not None) == rows.solve(remaining, [b])[0]
        if reduced is not None:
            A = rows.bases[b][np.isin(rows.rows_of[b], reduced.rows)]
            np.testing.assert_allclose(A.T @ reduced.p, rows.targets[b], atol=1e-10)
            state, agreed = reduced, agreed + 1
    assert agreed > 0
