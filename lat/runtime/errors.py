"""Errors the runtime raises for bad inputs and bad artifacts (one-line messages)."""


class InputError(ValueError):
    """An input outside the program's domain: unknown symbol, key absent, word too long."""


class ArtifactError(ValueError):
    """A file that is not a valid, intact lat artifact."""


class PrecisionError(RuntimeError):
    """The decode margin does not survive the chosen number format."""


#: The default of `--max-steps`: the most transitions (automata: input symbols) one run may
#: take — about a minute at the ~0.5 ms a machine step costs on a CPU core.
DEFAULT_MAX_STEPS = 100_000


class ResourceError(ValueError):
    """A run or a compile that would exceed a resource limit (--max-steps, --max-memory)."""
