"""Dependencies point down: lat → compiler, learner → runtime; never the other way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lat"

FORBIDDEN = {
    "runtime": ("lat.compiler", "lat.learner", "lat.api", "lat.cli", "lat.testing"),
    "learner": ("lat.compiler", "lat.api", "lat.cli", "lat.testing"),
    "compiler": ("lat.learner", "lat.api", "lat.cli", "lat.testing"),
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downwards(layer):
    offenders = []
    for path in (PACKAGE / layer).rglob("*.py"):
        for module in imported_modules(path):
            if module.startswith(FORBIDDEN[layer]) or module == "lat":
                offenders.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not offenders, offenders
