"""Hypothesis strategies for `.lat` programs, for lat's own tests and for its users.

`automaton_sources()` draws the text of random valid automata — total and deterministic by
construction, written in the many ways the grammar allows (names, numbers and quoted
symbols, `|`, `*`, header items in any order, comments, odd spacing) — so a property test
exercises the whole front end, not one canonical layout. `words()` draws inputs for them,
and `program_asts()` draws syntactically arbitrary ASTs for print → parse round-trips.
`machine_sources()` and `memory_sources()` do the same for bounded Turing machines and
associative memories; `machine_inputs()` draws input words for a machine.

Importing this module has no side effects (no Hypothesis profiles are registered).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

from hypothesis import strategies as st

from lat.compiler import ast
from lat.compiler.kinds import UnknownKind, kind_named, kind_names
from lat.compiler.parse import RESERVED_WORDS
from lat.compiler.printer import format_symbol, is_plain_name

__all__ = [
    "automaton_sources",
    "machine_inputs",
    "machine_sources",
    "memory_sources",
    "names",
    "program_asts",
    "symbol_texts",
    "words",
]

_FIRST = string.ascii_letters + "_"
_REST = string.ascii_letters + string.digits + "_"
# printable ASCII and a few non-ASCII letters, for the text of quoted symbols
_QUOTED_CHARS = st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("éλ→\t")


def names(max_size: int = 8) -> st.SearchStrategy[str]:
    """Identifiers the grammar accepts as NAME (never a reserved word)."""
    return st.builds(
        lambda first, rest: first + rest,
        st.sampled_from(_FIRST),
        st.text(alphabet=_REST, max_size=max_size - 1),
    ).filter(lambda text: text not in RESERVED_WORDS)


def symbol_texts() -> st.SearchStrategy[str]:
    """Symbol texts: mostly names and numbers, sometimes text that must be quoted."""
    return st.one_of(
        names(4),
        st.integers(min_value=0, max_value=999).map(str),
        st.text(alphabet=_QUOTED_CHARS, min_size=1, max_size=4),
        st.sampled_from(sorted(RESERVED_WORDS)),
    )


def _typable(text: str) -> bool:
    """An input symbol `--input` can give: no whitespace (the checker refuses the rest)."""
    return not any(char.isspace() for char in text)


def words(alphabet: Sequence[str], min_len: int = 0,
          max_len: int = 200) -> st.SearchStrategy[tuple[str, ...]]:
    """Words (tuples of symbols) over `alphabet`, of length min_len..max_len."""
    return st.lists(st.sampled_from(tuple(alphabet)), min_size=min_len,
                    max_size=max_len).map(tuple)


_COMMENTS = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.just("é"), max_size=20
)


@st.composite
def _symbol_written(draw: st.DrawFn, text: str) -> str:
    """`text` as a symbol in source: bare when it may be, sometimes quoted anyway."""
    written = format_symbol(text)
    if not written.startswith('"') and draw(st.integers(0, 4)) == 0:
        written = '"' + text + '"'
    return written


@st.composite
def _separator(draw: st.DrawFn) -> str:
    """Whitespace between lines: a newline, maybe a comment, maybe blank lines."""
    parts = []
    if draw(st.integers(0, 5)) == 0:
        parts.append("  # " + draw(_COMMENTS))
    parts.append("\n" * draw(st.integers(1, 2)))
    parts.append(draw(st.sampled_from(["  ", "    ", "\t", ""])))
    return "".join(parts)


def _declaration(draw: st.DrawFn, kind: str, name: str, lines: Sequence[str]) -> str:
    """`kind name { lines }`, maybe after a comment, with random separators."""
    text = draw(st.sampled_from(["", f"# a random {kind}\n"]))
    text += f"{kind} {name} {{" + draw(_separator())
    for line in lines:
        text += line + draw(_separator())
    return text + "}\n"


def _transitions(draw: st.DrawFn, state: str, groups: Sequence[tuple[object, list[str]]],
                 action: Callable[[object], str], sym: Callable[[str], str]) -> list[str]:
    """One state's rules: symbols grouped by what they do (`action(key)` is its text);
    a random group becomes `*`, each other one `a | b -> …` or one rule per symbol."""
    lines: list[str] = []
    star = draw(st.integers(-1, len(groups) - 1))  # which group becomes `*`, if any
    for index, (key, texts) in enumerate(groups):
        does = action(key)
        if index == star:
            lines.append(f"{state} * -> {does}")
        elif draw(st.booleans()):
            lines.append(f"{state} {' | '.join(sym(t) for t in texts)} -> {does}")
        else:
            lines.extend(f"{state} {sym(t)} -> {does}" for t in texts)
    return lines


@st.composite
def automaton_sources(draw: st.DrawFn, min_states: int = 2, max_states: int = 30,
                      min_symbols: int = 2, max_symbols: int = 5) -> str:
    """The text of a random valid (total, deterministic) automaton declaration."""
    n_states = draw(st.integers(min_states, max_states))
    n_symbols = draw(st.integers(min_symbols, max_symbols))
    states = draw(st.lists(names(), min_size=n_states, max_size=n_states, unique=True))
    alphabet = draw(st.lists(symbol_texts().filter(_typable), min_size=n_symbols,
                             max_size=n_symbols, unique=True))
    start = draw(st.sampled_from(states))
    accept = [state for state in states if draw(st.booleans())]
    name = draw(names())

    def sym(text: str) -> str:
        return draw(_symbol_written(text))

    header = [
        "alphabet: " + ", ".join(sym(text) for text in alphabet),
        "states: " + ", ".join(states),
        f"start: {start}",
    ]
    if accept:
        header.append("accept: " + ", ".join(accept))
    header = draw(st.permutations(header))

    lines: list[str] = []
    for state in states:
        by_target: dict[str, list[str]] = {}
        for text in alphabet:
            target = states[draw(st.integers(0, n_states - 1))]
            by_target.setdefault(target, []).append(text)
        lines += _transitions(draw, state, list(by_target.items()), str, sym)
    lines = draw(st.permutations(lines))
    return _declaration(draw, "automaton", name, [*header, *lines])


@st.composite
def machine_sources(draw: st.DrawFn, min_states: int = 2, max_states: int = 8,
                    min_symbols: int = 2, max_symbols: int = 4, max_steps: int = 64,
                    max_cells: int = 32) -> str:
    """The text of a random valid bounded Turing machine.

    The tape alphabet has min_symbols..max_symbols symbols, the blank `_` among them (at a
    random place in the list); min_states..max_states states, a non-empty random set of
    them halting (the start state may be one; halting states may be unreachable, which the
    checker only warns about). Every non-halting state has a rule for every tape symbol —
    random write, move (L, R or S) and next state — written one per line, grouped with `|`
    or as `*`. `bound: steps S, tape N` has 1 ≤ S ≤ max_steps and 1 ≤ N ≤ max_cells.
    """
    n_states = draw(st.integers(min_states, max_states))
    n_symbols = draw(st.integers(max(min_symbols, 1), max(max_symbols, min_symbols, 1)))
    states = draw(st.lists(names(), min_size=n_states, max_size=n_states, unique=True))
    others = draw(st.lists(symbol_texts().filter(lambda text: text != "_" and _typable(text)),
                           min_size=n_symbols - 1, max_size=n_symbols - 1, unique=True))
    tape = list(others)
    tape.insert(draw(st.integers(0, len(others))), "_")
    start = draw(st.sampled_from(states))
    halt = draw(st.lists(st.sampled_from(states), min_size=1, max_size=n_states, unique=True))
    steps = draw(st.integers(1, max(max_steps, 1)))
    cells = draw(st.integers(1, max(max_cells, 1)))
    name = draw(names())

    def sym(text: str) -> str:
        return draw(_symbol_written(text))

    header = [
        "tape: " + ", ".join(sym(text) for text in tape),
        "blank: " + sym("_"),
        "states: " + ", ".join(states),
        f"start: {start}",
        "halt: " + ", ".join(halt),
        f"bound: steps {steps}, tape {cells}",
    ]
    header = draw(st.permutations(header))

    lines: list[str] = []
    for state in states:
        if state in halt:
            continue
        by_action: dict[tuple[str, str, str], list[str]] = {}
        for text in tape:
            action = (draw(st.sampled_from(tape)), draw(st.sampled_from("LRS")),
                      draw(st.sampled_from(states)))
            by_action.setdefault(action, []).append(text)
        lines += _transitions(draw, state, list(by_action.items()),
                              lambda key: f"{sym(key[0])} {key[1]} {key[2]}", sym)
    lines = draw(st.permutations(lines))
    return _declaration(draw, "machine", name, [*header, *lines])


def machine_inputs(tape_symbols: Sequence[str], blank: str,
                   cells: int) -> st.SearchStrategy[tuple[str, ...]]:
    """Input words for a machine: over the non-blank tape symbols, of length 0..cells.

    A machine whose only tape symbol is the blank gets the empty word.
    """
    symbols = tuple(s for s in tape_symbols if s != blank)
    if not symbols:
        return st.just(())
    return words(symbols, 0, max(cells, 0))


@st.composite
def memory_sources(draw: st.DrawFn, min_pairs: int = 1, max_pairs: int = 60) -> str:
    """The text of a random valid memory: min_pairs..max_pairs entries with unique keys.

    Values come from a pool smaller than the table (about a third of its size), so several
    keys usually share a value; `default:` is present about half the time, sometimes one
    of the table's values, sometimes a new one. Entries come in random order, keys and
    values in any of the ways a symbol may be written.
    """
    n_pairs = draw(st.integers(min_pairs, max_pairs))
    keys = draw(st.lists(symbol_texts(), min_size=n_pairs, max_size=n_pairs, unique=True))
    pool_size = draw(st.integers(1, max(1, (n_pairs + 2) // 3)))
    pool = draw(st.lists(symbol_texts(), min_size=pool_size, max_size=pool_size, unique=True))
    name = draw(names())

    def sym(text: str) -> str:
        return draw(_symbol_written(text))

    lines = [f"{sym(key)} -> {sym(draw(st.sampled_from(pool)))}" for key in keys]
    if draw(st.booleans()):
        default = draw(st.sampled_from(pool) | symbol_texts())
        lines.insert(draw(st.integers(0, len(lines))), f"default: {sym(default)}")
    return _declaration(draw, "memory", name, lines)


# --------------------------------------------------------------------------- ASTs


def _name() -> st.SearchStrategy[ast.Name]:
    return names().map(ast.Name)


def _symbol() -> st.SearchStrategy[ast.Symbol]:
    return st.one_of(symbol_texts(), st.text(max_size=3)).map(
        lambda text: ast.Symbol(text, quoted=not is_plain_name(text))
    )


def _tuple(elements: st.SearchStrategy, max_size: int = 4) -> st.SearchStrategy[tuple]:
    return st.lists(elements, max_size=max_size).map(tuple)


def _selection() -> st.SearchStrategy[tuple[ast.Symbol, ...] | ast.Star]:
    return st.one_of(st.just(ast.Star()), st.lists(_symbol(), min_size=1, max_size=3).map(tuple))


_automata = st.builds(
    ast.Automaton,
    name=_name(),
    alphabet=_tuple(_symbol()),
    states=_tuple(_name()),
    start=st.one_of(_name(), st.just(ast.Name(""))),
    accept=_tuple(_name()),
    transitions=_tuple(st.builds(ast.Transition, state=_name(), symbols=_selection(),
                                 target=_name())),
)
_memories = st.builds(
    ast.Memory,
    name=_name(),
    entries=_tuple(st.builds(ast.Entry, key=_symbol(), value=_symbol())),
    default=st.none() | _symbol(),
)
_machines = st.builds(
    ast.Machine,
    name=_name(),
    tape=_tuple(_symbol()),
    blank=_symbol(),
    states=_tuple(_name()),
    start=st.one_of(_name(), st.just(ast.Name(""))),
    halt=_tuple(_name()),
    bound=st.builds(ast.Bound, steps=st.integers(0, 10**6), tape=st.integers(0, 10**4)),
    rules=_tuple(st.builds(ast.Rule, state=_name(), reads=_selection(), write=_symbol(),
                           move=st.sampled_from(["L", "R", "S"]) | names(), target=_name())),
)


def program_asts(max_declarations: int = 3) -> st.SearchStrategy[ast.Program]:
    """Syntactically arbitrary programs (not necessarily ones the checker accepts)."""
    declarations = st.one_of(_automata, _memories, _machines)
    return st.lists(declarations, max_size=max_declarations).map(
        lambda ds: ast.Program(tuple(ds))
    )


# ------------------------------------------------- public strategies for compiled models
#
# For users' own property tests: draw a compiled program, draw valid inputs for any
# runtime model, and assert that two models (say a compiled one and one relearned from its
# traces) compute the same decoded outputs:
#
#     from hypothesis import given, settings
#     from lat.learner import learn
#     from lat.testing import assert_equivalent, programs
#
#     @settings(max_examples=5, deadline=None)
#     @given(programs(kind="automaton"))
#     def test_relearned_automata_agree(model):
#         learned = learn(model, samples=300, max_len=12).model
#         assert_equivalent(model, learned, max_len=8)
#
# (tests/test_testing_public.py runs this example.)

PROGRAM_KINDS = kind_names()


def programs(kind: str = "automaton", **sizes: int) -> st.SearchStrategy:
    """Compiled runtime models (`CompiledModel`) of random valid programs of one kind.

    kind: "automaton" (`automaton_sources`, default 2..8 states, 2..3 symbols), "memory"
    (`memory_sources`, default 1..12 pairs) or "machine" (`machine_sources`, default
    sizes): the kind's source strategy and defaults (`Kind.source_strategy`). `sizes`
    override the source strategy's keyword arguments. Each drawn source is compiled with
    `lat.compiler.compile_source` (weights placement).
    """
    from lat.compiler import compile_source

    try:
        found = kind_named(kind)
    except UnknownKind:
        raise ValueError(f"kind must be one of {', '.join(PROGRAM_KINDS)}, not {kind!r}") from None
    strategy = globals()[found.source_strategy]
    source = strategy(**{**found.strategy_defaults, **sizes})
    return source.map(lambda text: compile_source(text).model)


def inputs(model: object, max_len: int = 16) -> st.SearchStrategy[tuple[str, ...]]:
    """Valid input words for a runtime `CompiledModel`, from its interface alone.

    Symbols come from the interface's input alphabet; lengths are those 0..max_len that
    the runtime accepts (a memory: one key; a bounded machine: at most its tape), asked
    once when the strategy is built (`lat.learner.input_lengths`).
    """
    from lat.learner import input_lengths

    alphabet = tuple(model.interface.input_alphabet)
    if not alphabet:
        return st.just(())
    lengths = input_lengths(model, max_len)
    if lengths == list(range(lengths[0], lengths[-1] + 1)):
        return words(alphabet, lengths[0], lengths[-1])
    return st.sampled_from(lengths).flatmap(lambda n: words(alphabet, n, n))


def assert_equivalent(a: object, b: object, inputs: Sequence[Sequence[str]] | None = None,
                      *, max_len: int = 8, count: int = 500, dtype: str = "fp32") -> int:
    """Assert that runtime models `a` and `b` decode the same outputs on `inputs`.

    Compared per input: every decoded field at every answer position, the step count and
    the stop reason (rollouts in `dtype`). Without `inputs`: every word up to the length
    where `count`/2 is reached, plus `count` random words of length ≤ max_len
    (`lat.learner.domain_words`, seed 0). The two models must share their interface.
    Raises AssertionError naming the first mismatching input; returns the inputs checked.
    """
    import numpy as np

    from lat.learner import domain_words, input_lengths
    from lat.runtime.execute import rollout

    if a.interface.to_json() != b.interface.to_json():
        raise AssertionError("the two models have different interfaces")
    if inputs is None:
        inputs = domain_words(a.interface, count, input_lengths(a, max_len),
                              np.random.default_rng(0))
    inputs = [tuple(w) for w in inputs]
    for start in range(0, len(inputs), 256):
        chunk = inputs[start:start + 256]
        for word, x, y in zip(chunk, rollout(a, chunk, dtype=dtype),
                              rollout(b, chunk, dtype=dtype), strict=True):
            if (x.decoded, x.steps, x.stopped_by) != (y.decoded, y.steps, y.stopped_by):
                raise AssertionError(
                    f"models differ on input {list(word)}: {x.decoded} ({x.steps} steps, "
                    f"{x.stopped_by}) vs {y.decoded} ({y.steps} steps, {y.stopped_by})"
                )
    return len(inputs)


__all__ += ["PROGRAM_KINDS", "assert_equivalent", "inputs", "programs"]
