"""Golden tests: every bad program in tests/golden/bad/ fails with exactly its .err text.

The `.err` file holds `str(diagnostic)` with the file shown as just `NAME.lat`. Run with
`LAT_UPDATE_GOLDEN=1` to rewrite the `.err` files after a deliberate change of wording,
then review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lat.compiler.check import check_program
from lat.compiler.errors import LatError
from lat.compiler.parse import parse_program

BAD = Path(__file__).parent / "golden" / "bad"
CASES = sorted(BAD.glob("*.lat"))
UPDATE = os.environ.get("LAT_UPDATE_GOLDEN") == "1"


def diagnose(path: Path) -> str:
    with pytest.raises(LatError) as caught:
        check_program(parse_program(path.read_text(encoding="utf-8"), path.name))
    return str(caught.value.diagnostic)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 18


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_golden(path: Path) -> None:
    actual = diagnose(path)
    expected_path = path.with_suffix(".err")
    if UPDATE or not expected_path.exists():
        expected_path.write_text(actual + "\n", encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"wrote missing {expected_path.name}; review it and run again")
    assert actual == expected_path.read_text(encoding="utf-8").rstrip("\n")
