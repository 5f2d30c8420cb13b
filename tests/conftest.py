"""Shared test configuration: Hypothesis profiles and small fixtures.

Profiles: `dev` (default, quick), `ci` (CI=true or HYPOTHESIS_PROFILE=ci: more examples,
no deadline), `thorough` (HYPOTHESIS_PROFILE=thorough, for a long local run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"


@pytest.fixture
def programs_dir() -> Path:
    return PROGRAMS
