"""The exact domain of an automaton-like program: a fixpoint over its decoded states.

When the source's decoded outputs depend on its current token alone — proven from its
weights by `token_determined`, not assumed — every run is a walk in a finite graph over the
decoded states, and the affine hull of the count vectors of the words reaching each state
is a fixpoint that a worklist reaches after at most dim-many growths. That gives the span
L_c of every current token over every word of every length, each new direction with its
witness word (docs/ARCHITECTURE.md, "The certificate").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from lat.learner.counts import (
    COUNT_TOL,
    CountSpans,
    Domain,
    Hull,
    Span,
    Vocabulary,
    iter_pair_outputs,
    relative_residual,
)
from lat.learner.traces import rollouts
from lat.runtime.execute import rollout
from lat.runtime.interface import Interface
from lat.runtime.model import CompiledModel

Word = tuple[str, ...]
Progress = Callable[[str, int, int], None]
MAX_STATES = 4096  # decoded states explored at most for a token graph
MAX_GRAPH_WORK = 5e10  # ~ a minute or two on a 2-core machine (64×4 is 2.5e9: 6 s)
MIN_GRAPH_LENGTH = 10_000  # a token graph proven for shorter words only is not used
ROLLOUT_CHUNK = 2048

__all__ = ["token_graph_domain", "token_determined"]


def _graph_applies(interface: Interface) -> str | None:
    """Why the token-graph analysis does not apply to this interface (None: it applies)."""
    if interface.single_symbol_input or interface.max_input_length is not None:
        return "inputs are bounded (enumerated instead)"
    if len(interface.feed_cycle) != 1:
        return "more than one token per step"
    if interface.halt_on or interface.max_steps is not None:
        return "the run can halt before its input ends"
    sources = [s for spec in interface.feed_cycle for srcs in spec.values() for s in srcs]
    if any(not (s == "input" or s.startswith(("output:", "const:"))) for s in sources):
        return "the feedback reads more than the decoded outputs and the next symbol"
    if not interface.sampling_alphabet:
        return "the input alphabet is empty"
    return None


def token_graph_domain(source: CompiledModel, notes: list[str], seed: int,
                        design_length: int, progress: Progress | None) -> Domain | None:
    """The exact domain of `source` over every word of every length (module doc), or None
    with the reason in `notes` when the analysis does not apply or its proof fails."""
    interface = source.interface
    why = _graph_applies(interface)
    if why is not None:
        notes.append(f"token graph: not applicable ({why})")
        return None
    alphabet = interface.sampling_alphabet
    fields = [f.name for f, _ in interface.output_slices()]
    vocabulary = Vocabulary()
    empty = rollout(source, [()], dtype="fp64", record=True)[0]
    prompt = [vocabulary.of(row) for row in empty.tokens]
    start_state = tuple(empty.decoded[f][-1] for f in fields)

    # Explore: decoded states, breadth-first; every (state, symbol) gives a fed token and
    # the state decoded there. A token seen twice with two different decodes disproves
    # token-determined decoding at once.
    representative: dict[tuple, Word] = {start_state: ()}
    edges: dict[tuple[tuple, str], tuple[int, tuple]] = {}
    decoded_at: dict[int, tuple] = {}
    frontier = [start_state]
    while frontier:
        moves = [(s, a) for s in frontier for a in alphabet]
        words = [representative[s] + (a,) for s, a in moves]
        runs = rollouts(source, words, chunk=ROLLOUT_CHUNK, progress=progress, phase="explore")
        frontier = []
        for move, word, run in zip(moves, words, runs, strict=True):
            state = tuple(run.decoded[f][-1] for f in fields)
            token = vocabulary.of(run.tokens[-1])
            if decoded_at.setdefault(token, state) != state:
                notes.append(f"token graph: the source decodes one token two ways (after "
                             f"{_show(word)}): its outputs depend on more than the current "
                             "token")
                return None
            edges[move] = (token, state)
            if state not in representative:
                representative[state] = word
                frontier.append(state)
        if len(representative) > MAX_STATES:
            notes.append(f"token graph: more than {MAX_STATES} decoded states")
            return None

    U = vocabulary.matrix(source.d)
    m = U.shape[0]
    # The fixpoint tests ~S·r points per symbol against hulls of dimension ~r in R^m
    # (S states, r = m − S + 1): refuse work far beyond what a user waits for.
    rank = max(1, m - len(representative) + 1)
    work = len(representative) * rank * len(alphabet) * m * rank
    if work > MAX_GRAPH_WORK:
        notes.append(f"token graph: {len(representative)} decoded states and {m} tokens make "
                     f"the exact fixpoint ~{work:.1e} operations, over its budget of "
                     f"{MAX_GRAPH_WORK:.0e}")
        return None
    prompt_counts = np.bincount(prompt, minlength=m).astype(np.float64)
    fed = sorted(decoded_at)
    proof = token_determined(source, U, prompt, prompt_counts, fed, decoded_at, start_state,
                              fields, notes)
    if proof is None:
        return None
    margins, cross = proof
    # Other tokens may move a decode by ρ_c per occurrence: the graph is then exact only
    # for words short enough that 2 t ρ_c < μ_c (every length when every ρ_c is 0).
    limit = min((math.ceil(margins[c] / (2 * cross[c])) - 1 for c in cross if cross[c] > 0),
                default=None)
    max_length = None if limit is None else limit - len(prompt)
    if max_length is not None and max_length < MIN_GRAPH_LENGTH:
        notes.append(f"token graph: other tokens move the source's decodes; they are proven "
                     f"token-determined only up to {max(max_length, 0)} symbols")
        return None

    # Fixpoint: the affine hull of the count vectors of the words reaching each state.
    hulls: dict[tuple, Hull] = {start_state: Hull(prompt_counts)}
    points: list[tuple[tuple, np.ndarray, Word]] = [(start_state, prompt_counts, ())]
    queue = deque(points)
    while queue:
        state, counts, word = queue.popleft()
        for a in alphabet:
            token, target = edges[(state, a)]
            moved = counts.copy()
            moved[token] += 1
            hull = hulls.get(target)
            if hull is None:
                hulls[target] = Hull(moved)
            elif not hull.add(moved):
                continue
            points.append((target, moved, word + (a,)))
            queue.append((target, moved, word + (a,)))

    # L_c: the span of {n + e_c : n in the hull of a state that feeds c}.
    spans: dict[int, Span] = {}
    last_prompt = prompt[-1]
    spans.setdefault(last_prompt, Span(m)).add(prompt_counts)
    for (state, _a), (token, _target) in edges.items():
        hull = hulls[state]
        span = spans.setdefault(token, Span(m))
        point = hull.point.copy()
        point[token] += 1
        span.add(point)
        for k in range(hull.directions.dim):
            span.add(hull.directions.basis[:, k])
    dimension = sum(s.dim for s in spans.values())
    bases = {c: s.basis.copy() for c, s in spans.items()}

    walker = _Walker(edges, start_state, prompt, prompt_counts, alphabet, m)
    candidates = [(word + (a,), edges[(state, a)][0], counts)
                  for state, counts, word in points for a in alphabet]
    design = walker.spanning_words(candidates, bases, design_length,
                                   np.random.default_rng([seed, 4]))
    certify = walker.spanning_words(candidates, bases, design_length,
                                    np.random.default_rng([seed, 5]))
    longest = max((len(w) for w, _, _ in candidates), default=0)
    notes.append(
        f"token graph: {len(hulls)} decoded states, {m} distinct tokens; the source's "
        "decoded outputs depend on the current token alone (proven from its weights); "
        f"witness words up to length {longest}"
    )
    symbols = ", ".join(alphabet[:12]) + (", ..." if len(alphabet) > 12 else "")
    lengths = "every length" if max_length is None else f"length ≤ {max_length:,}"
    return Domain(
        scope="exact",
        description=f"every word over {{{symbols}}} of {lengths}",
        certify_words=certify,
        design_words=design,
        dimension=dimension,
        spans=CountSpans(vocabulary=U, bases=bases, margins=margins, cross=cross,
                         max_tokens=None, prompt_length=len(prompt)),
        notes=notes,
        max_length=max_length,
    )


class _Walker:
    """Walks in the token graph: count vectors of every answer prefix of a word."""

    def __init__(self, edges: dict, start: tuple, prompt: list[int], prompt_counts: np.ndarray,
                 alphabet: Sequence[str], m: int) -> None:
        self.edges, self.start, self.prompt = edges, start, prompt
        self.prompt_counts, self.alphabet, self.m = prompt_counts, tuple(alphabet), m

    def prefixes(self, word: Word) -> Iterator[tuple[int, np.ndarray]]:
        counts, state = self.prompt_counts.copy(), self.start
        yield self.prompt[-1], counts.copy()
        for a in word:
            token, state = self.edges[(state, a)]
            counts[token] += 1
            yield token, counts.copy()

    def spanning_words(self, candidates: list[tuple[Word, int, np.ndarray]],
                       bases: dict[int, np.ndarray], length: int,
                       rng: np.random.Generator) -> list[Word]:
        """Few words whose answer prefixes span every L_c.

        Candidates (witness prefixes) are taken deepest first; one not yet covered starts a
        word, which then walks on greedily — each step takes the symbol whose token has the
        most of its span still uncovered (a random one when every reachable span is full) —
        up to `length` symbols (a long word carries many directions). Every candidate ends
        up covered and the candidates span every L_c, so the chosen words do too."""
        covered = {c: Span(self.m) for c in bases}
        missing = {c: b.shape[1] for c, b in bases.items()}  # directions still uncovered
        left = sum(missing.values())
        order = sorted(range(len(candidates)),
                       key=lambda i: (-len(candidates[i][0]), rng.random()))
        chosen: list[Word] = []

        def add(c: int, vector: np.ndarray) -> None:
            nonlocal left
            if missing[c] and covered[c].add(vector):
                missing[c] -= 1
                left -= 1

        for i in order:
            if not left:
                break
            word, token, counts = candidates[i]
            if not missing[token]:
                continue
            point = counts.copy()
            point[token] += 1
            if relative_residual(covered[token], point) <= COUNT_TOL:
                continue
            for c, vector in self.prefixes(word):
                add(c, vector)
            counts, state = point, self.edges_state(word)
            full = list(word)
            while len(full) < length:
                options = [(missing[self.edges[(state, a)][0]], rng.random(), a)
                           for a in self.alphabet]
                best = max(options)[2]
                c, state = self.edges[(state, best)]
                counts[c] += 1
                add(c, counts)
                full.append(best)
            chosen.append(tuple(full))
        return chosen

    def edges_state(self, word: Word) -> tuple:
        state = self.start
        for a in word:
            state = self.edges[(state, a)][1]
        return state


def token_determined(source: CompiledModel, U: np.ndarray, prompt: list[int],
                      prompt_counts: np.ndarray, fed: list[int], decoded_at: dict,
                      start_state: tuple, fields: list[str],
                      notes: list[str]) -> tuple[dict[int, float], dict[int, float]] | None:
    """Prove from the weights that the source decodes by its current token alone.

    At a fed token c the output is G_c n_P + k G[:, c, c] + Σ_{fed u ≠ c} n_u G[:, u, c]
    (n_P the prompt's counts, k ≥ 1 the copies of c). If in every output block the winner
    at k = 1 wins by μ_c > 0 and its entry of G[:, c, c] is not below any other, it wins
    for every k; the other fed tokens can move an entry by at most ρ_c per occurrence, so
    the decode is c's own as long as 2 t ρ_c < μ_c (every length when ρ_c = 0, as in a
    compiled model). Returns (μ, ρ) per answer token, or None with a note."""
    interface = source.interface
    if source.normalise:
        notes.append("token graph: normalised attention is not analysed")
        return None
    currents = [prompt[-1], *fed]
    fed_mask = np.zeros(U.shape[0], dtype=bool)
    fed_mask[fed] = True
    margins: dict[int, float] = {}
    cross: dict[int, float] = {}
    slices = interface.output_slices()
    for i, G_c in iter_pair_outputs(source, U, currents):
        c = currents[i]
        base = G_c @ prompt_counts
        if i == 0:  # the last prompt position: its counts are the prompt's, fixed
            own, expected, others = np.zeros_like(base), start_state, np.zeros(0)
        else:
            own, expected = G_c[:, c], decoded_at[c]
            mask = fed_mask.copy()
            mask[c] = False
            others = G_c[:, mask]
            base = base + own
        margin = math.inf
        for (out_field, offset), value in zip(slices, expected, strict=True):
            block = slice(offset, offset + out_field.width)
            y, g = base[block], own[block]
            winner = int(np.argmax(y))
            if out_field.values[winner] != value:
                notes.append(f"token graph: the weights decode '{out_field.values[winner]}' "
                             f"where the source's rollout decoded '{value}'")
                return None
            rest = np.delete(np.arange(y.size), winner)
            if rest.size:
                gap = float(np.min(y[winner] - y[rest]))
                scale = max(1.0, float(np.max(np.abs(g))))
                if gap <= 0.0 or float(np.min(g[winner] - g[rest])) < -1e-12 * scale:
                    notes.append(f"token graph: the decode of output '{out_field.name}' can "
                                 "change with the count of the current token")
                    return None
                margin = min(margin, gap)
        margins[c] = margin
        cross[c] = float(np.max(np.abs(others))) if others.size else 0.0
    return margins, cross


def _show(word: Word) -> str:
    text = " ".join(word)
    return f"'{text[:60]}…'" if len(text) > 60 else f"'{text}'"
