"""lat: compile small programs to multi-head linear attention weights, and back.

    import lat
    compilation = lat.compile_file("programs/parity.lat")
    lat.run(compilation.model, "1101")            # the `lat run --json` object
    lat.verify(compilation)                       # compiled vs reference interpreter
    lat.learn(compilation.model).certificate      # Algorithm 1 + identifiability certificate

The names are loaded on first use, so that `import lat.runtime` (the floor every model
runs on) does not pull in the compiler or the learner.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "compile_file": "lat.api",
    "load_model": "lat.api",
    "run": "lat.api",
    "verify": "lat.api",
    "learn": "lat.learner",
    "CompiledModel": "lat.runtime.model",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lat' has no attribute {name!r}")
