"""The public testing tools, used the way a user's own test suite would use them.

This file is the documented example: property-test a model learned from traces against
the compiled model it was learned from.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lat.learner import learn
from lat.testing import assert_equivalent, inputs, programs

SLOW = settings(max_examples=5, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SLOW
@given(programs(kind="automaton"))
def test_relearned_automata_agree_with_the_compiled_ones(model):
    """The example: learn from rollouts, then assert equivalence on the domain."""
    learned = learn(model, samples=300, max_len=12, domain_samples=200,
                    domain_max_len=8).model
    assert assert_equivalent(model, learned, max_len=8) > 0


@SLOW
@given(st.data())
def test_inputs_are_valid_for_every_kind(data):
    from lat.runtime.execute import rollout

    for kind in ("automaton", "memory", "machine"):
        model = data.draw(programs(kind=kind))
        word = data.draw(inputs(model, max_len=6))
        assert set(word) <= set(model.interface.input_alphabet)
        rollout(model, [word])  # accepted: no InputError


@SLOW
@given(programs(kind="automaton", min_states=3))
def test_a_model_differs_from_a_changed_one(model):
    import dataclasses

    other = dataclasses.replace(model, V=-model.V)
    with pytest.raises(AssertionError, match="differ"):
        assert_equivalent(model, other, max_len=4)
    assert_equivalent(model, model, inputs=[()])


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        programs(kind="cellular")
