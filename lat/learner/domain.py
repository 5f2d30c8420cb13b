"""The inputs a certificate speaks about, and which of them were enumerated or sampled.

Every program draws its tokens from a finite vocabulary U, so S_t = Σ_u n_u(t) u uᵀ: the
features of a prefix are a fixed *linear* map of its count vector n(t) ∈ N^|U|, given the
current token c. Coverage of a whole domain is therefore a question about the linear span
L_c of the count vectors of the domain's prefixes that end at c (docs/ARCHITECTURE.md,
"The certificate"). `build_domain` computes those spans exactly where it can:

- **token graph** (automata, both placements): when the source's decoded outputs are a
  function of the current token alone — *proven from its weights*, not assumed (see
  `_token_determined`) — the runs are walks in a finite graph over the decoded states.
  An affine-hull fixpoint over that graph gives L_c over **every word of every length**;
  each new direction comes with a witness word.
- **enumeration** (memories, bounded machines): every input the interface admits, rolled
  out through the source, when there are at most `budget` of them.
- otherwise **sampled**: all short words and random longer ones, labelled as a sample.

An exact domain also yields two spanning sets of words built from independent random
streams: one to train on (data design by construction) and one to certify with.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lat.learner.traces import sample_words
from lat.runtime.errors import InputError
from lat.runtime.execute import rollout
from lat.runtime.interface import Interface
from lat.runtime.model import CompiledModel

Word = tuple[str, ...]
Progress = Callable[[str, int, int], None]

COUNT_TOL = 1e-9  # relative residual above which a count vector opens a new direction
EXACT_BUDGET = 20_000  # inputs enumerated at most for an exact finite domain
MAX_STATES = 4096  # decoded states explored at most for a token graph
MIN_GRAPH_LENGTH = 10_000  # a token graph proven for shorter words only is not used
ROLLOUT_CHUNK = 2048
SPAN_BATCH = 2048  # inputs whose prefixes are tested against the spans at once

__all__ = ["EXACT_BUDGET", "CountSpans", "Domain", "build_domain", "domain_words",
           "input_lengths", "pair_outputs", "sample_words_of_lengths"]


# -- word samplers ---------------------------------------------------------------------------


def input_lengths(model: CompiledModel, max_len: int) -> list[int]:
    """The word lengths 0..max_len that `model` accepts as input (its domain's lengths).

    Automata take any length; a memory takes one key; a bounded machine at most its tape.
    Rather than guess from the interface's labels, ask the runtime: a length is accepted
    when a word of that length rolls out without an InputError. Accepted lengths are taken
    to form an interval when both ends are accepted (two probes); otherwise every length is
    probed. Raises ValueError when no length up to max_len is accepted.
    """
    interface = model.interface
    if not interface.input_alphabet:
        return [0]
    symbol = interface.input_alphabet[0]

    def accepted(length: int) -> bool:
        try:
            rollout(model, [(symbol,) * length])
        except InputError:
            return False
        return True

    if accepted(0) and accepted(max_len):
        return list(range(max_len + 1))
    lengths = [n for n in range(max_len + 1) if accepted(n)]
    if not lengths:
        raise ValueError(f"the model accepts no input word of length 0..{max_len}")
    return lengths


def sample_words_of_lengths(
    interface: Interface, count: int, lengths: Sequence[int], rng: np.random.Generator
) -> list[Word]:
    """`count` random words with length uniform over `lengths`, symbols uniform."""
    if list(lengths) == list(range(max(lengths) + 1)):
        return sample_words(interface, count, max(lengths), rng)
    alphabet = interface.sampling_alphabet
    chosen = rng.choice(np.asarray(lengths), size=count)
    return [tuple(alphabet[i] for i in rng.integers(0, len(alphabet), n)) for n in chosen]


def domain_words(
    interface: Interface, count: int, lengths: Sequence[int], rng: np.random.Generator
) -> list[Word]:
    """Every word of the allowed lengths, shortest first, while their cumulative count stays
    ≤ count/2; then `count` random words of the allowed lengths."""
    return _short_words(interface, count, lengths) + sample_words_of_lengths(
        interface, count, lengths, rng)


def _short_words(interface: Interface, count: int, lengths: Sequence[int]) -> list[Word]:
    alphabet = interface.sampling_alphabet
    words: list[Word] = []
    for length in sorted(lengths):
        if len(words) + len(alphabet) ** length > count / 2:
            break
        words.extend(itertools.product(alphabet, repeat=length))
    return words


# -- count-space spans -----------------------------------------------------------------------


class _Span:
    """An orthonormal basis, grown one vector at a time, of a subspace of R^m."""

    def __init__(self, m: int) -> None:
        self.basis = np.zeros((m, 0))

    @property
    def dim(self) -> int:
        return self.basis.shape[1]

    def residual(self, v: np.ndarray) -> np.ndarray:
        r = v - self.basis @ (self.basis.T @ v)
        return r - self.basis @ (self.basis.T @ r)  # twice is enough (Kahan, Parlett)

    def add(self, v: np.ndarray) -> bool:
        """Add `v`'s direction if it leaves a relative residual > COUNT_TOL; True if added."""
        norm = float(np.linalg.norm(v))
        if norm == 0.0 or self.dim == self.basis.shape[0]:
            return False
        r = self.residual(v)
        rn = float(np.linalg.norm(r))
        if rn <= COUNT_TOL * norm:
            return False
        self.basis = np.concatenate([self.basis, (r / rn)[:, None]], axis=1)
        return True


class _Hull:
    """The affine hull of a set of count vectors: a point and an orthonormal direction basis."""

    def __init__(self, point: np.ndarray) -> None:
        self.point = point
        self.directions = _Span(point.size)

    def add(self, v: np.ndarray) -> bool:
        return self.directions.add(v - self.point)


@dataclass(frozen=True)
class CountSpans:
    """Exact per-token spans of the domain's count vectors, for the equivalence proof.

    `bases[c]` is an orthonormal basis (m, r) of L_c for every token c at which an output is
    decoded; `margins[c]` the source's decode margin there and `cross[c]` the largest output
    any other fed token adds per occurrence (0 for a token-determined source; see
    `_token_determined`). `max_tokens` bounds the prefix length in tokens (None: every
    length).
    """

    vocabulary: np.ndarray  # (m, d) float64, one row per distinct token
    bases: dict[int, np.ndarray]
    margins: dict[int, float]
    cross: dict[int, float]
    max_tokens: int | None
    prompt_length: int


@dataclass
class Domain:
    """What the certificate is about: its scope, in words, and the words that carry it.

    Exact scope: `certify_words` is a set of input words whose prefixes' count vectors span
    every L_c, so a statement linear in the features that holds on their prefixes holds on
    the whole domain; `design_words` is a second spanning set from an independent random
    stream, to train on. Sampled scope: `certify_words` is the sample.
    """

    scope: str  # "exact" or "sampled"
    description: str  # one plain sentence a user can check
    certify_words: list[Word]
    design_words: list[Word] = field(default_factory=list)
    dimension: int | None = None  # Σ_c dim L_c (exact scope)
    spans: CountSpans | None = None
    notes: list[str] = field(default_factory=list)
    max_length: int | None = None  # longest input in the domain (None: every length)

    def summary(self) -> dict[str, object]:
        return {"scope": self.scope, "domain": self.description,
                "domain_dimension": self.dimension, "domain_notes": "; ".join(self.notes)}


def build_domain(
    source: CompiledModel,
    *,
    max_len: int,
    samples: int,
    seed: int,
    exact: bool = True,
    budget: int = EXACT_BUDGET,
    design_length: int | None = None,
    progress: Progress | None = None,
) -> Domain:
    """The exact domain where the program allows it, else a labelled sample.

    `max_len` bounds the sampled words (and is the design length of exact spanning words);
    `samples` is the size of a sample; `budget` the most inputs enumerated exactly.
    """
    notes: list[str] = []
    if exact:
        graph = _token_graph_domain(source, notes, seed, design_length or max_len, progress)
        if graph is not None:
            return graph
        finite = _enumerated_domain(source, notes, budget, progress)
        if finite is not None:
            return finite
    else:
        notes.append("exact analysis not asked for")
    return _sampled_domain(source, notes, max_len, samples, seed)


def _sampled_domain(source: CompiledModel, notes: list[str], max_len: int, samples: int,
                    seed: int) -> Domain:
    interface = source.interface
    lengths = input_lengths(source, max_len)
    short = _short_words(interface, samples, lengths)
    rng = np.random.default_rng([seed, 2])
    words = short + sample_words_of_lengths(interface, samples, lengths, rng)
    longest_short = max((len(w) for w in short), default=None)
    parts = [f"{samples:,} sampled words of length ≤ {max(lengths)}"]
    if short:
        parts.append(f"all {len(short):,} of length ≤ {longest_short}")
    return Domain(scope="sampled", description=" and ".join(parts) + " — not a proof",
                  certify_words=words, notes=notes, max_length=max(lengths))


# -- token graph: automata -------------------------------------------------------------------


class _Vocabulary:
    """Distinct token rows, numbered in order of first appearance."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.rows: list[np.ndarray] = []

    def of(self, row: np.ndarray) -> int:
        key = np.ascontiguousarray(row, dtype=np.float64).tobytes()
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.rows)
            self.rows.append(np.asarray(row, dtype=np.float64).copy())
        return found

    def matrix(self, d: int) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, d))


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


def _token_graph_domain(source: CompiledModel, notes: list[str], seed: int,
                        design_length: int, progress: Progress | None) -> Domain | None:
    interface = source.interface
    why = _graph_applies(interface)
    if why is not None:
        notes.append(f"token graph: not applicable ({why})")
        return None
    alphabet = interface.sampling_alphabet
    fields = [f.name for f, _ in interface.output_slices()]
    vocabulary = _Vocabulary()
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
        runs = _rollouts(source, words, progress, "explore")
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
    prompt_counts = np.bincount(prompt, minlength=m).astype(np.float64)
    fed = sorted(decoded_at)
    proof = _token_determined(source, U, prompt, prompt_counts, fed, decoded_at, start_state,
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
    hulls: dict[tuple, _Hull] = {start_state: _Hull(prompt_counts)}
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
                hulls[target] = _Hull(moved)
            elif not hull.add(moved):
                continue
            points.append((target, moved, word + (a,)))
            queue.append((target, moved, word + (a,)))

    # L_c: the span of {n + e_c : n in the hull of a state that feeds c}.
    spans: dict[int, _Span] = {}
    last_prompt = prompt[-1]
    spans.setdefault(last_prompt, _Span(m)).add(prompt_counts)
    for (state, _a), (token, _target) in edges.items():
        hull = hulls[state]
        span = spans.setdefault(token, _Span(m))
        point = hull.point.copy()
        point[token] += 1
        span.add(point)
        for k in range(hull.directions.dim):
            span.add(hull.directions.basis[:, k])
    dimension = sum(s.dim for s in spans.values())
    bases = {c: s.basis for c, s in spans.items()}

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
        word, which then walks on greedily — each step takes the symbol whose prefix leaves
        the largest residual outside the span covered so far, a random one when none does —
        up to `length` symbols (a long word carries many directions). Every candidate ends
        up covered and the candidates span every L_c, so the chosen words do too."""
        covered = {c: _Span(self.m) for c in bases}
        target = sum(b.shape[1] for b in bases.values())
        have = 0
        order = sorted(range(len(candidates)),
                       key=lambda i: (-len(candidates[i][0]), rng.random()))
        chosen: list[Word] = []
        for i in order:
            if have == target:
                break
            word, token, counts = candidates[i]
            point = counts.copy()
            point[token] += 1
            if _relative(covered[token], point) <= COUNT_TOL:
                continue
            for c, vector in self.prefixes(word):
                have += covered[c].add(vector)
            counts, state = point, self.edges_state(word)
            full = list(word)
            while len(full) < length:
                best, best_residual = None, COUNT_TOL
                for a in self.alphabet:
                    c, _ = self.edges[(state, a)]
                    counts[c] += 1
                    residual = _relative(covered[c], counts)
                    counts[c] -= 1
                    if residual > best_residual:
                        best, best_residual = a, residual
                if best is None:
                    best = self.alphabet[int(rng.integers(len(self.alphabet)))]
                c, state = self.edges[(state, best)]
                counts[c] += 1
                have += covered[c].add(counts)
                full.append(best)
            chosen.append(tuple(full))
        return chosen

    def edges_state(self, word: Word) -> tuple:
        state = self.start
        for a in word:
            state = self.edges[(state, a)][1]
        return state


def _relative(span: _Span, v: np.ndarray) -> float:
    norm = float(np.linalg.norm(v))
    return float(np.linalg.norm(span.residual(v))) / norm if norm else 0.0


def pair_outputs(model: CompiledModel, vocabulary: np.ndarray,
                 currents: Sequence[int]) -> np.ndarray:
    """G[:, u, i] = Σ_h V_h u (uᵀ Q_h c_i): the output one occurrence of token u adds at a
    position whose current token is c_i = vocabulary[currents[i]] (float64).

    y_t = Σ_u n_u(t) G[:, u, c_t]: the whole model on a finite vocabulary."""
    U = torch.from_numpy(np.asarray(vocabulary, dtype=np.float64))
    C = U[list(currents)]
    V = model.V.to(torch.float64)
    Q = model.Q.to(torch.float64)
    scale = float(model.scale)
    value = torch.einsum("hod,ud->hou", V, U)  # V_h u
    match = torch.einsum("ud,hde,ce->huc", U, Q, C)  # uᵀ Q_h c
    return (scale * torch.einsum("hou,huc->ouc", value, match)).numpy()


def _token_determined(source: CompiledModel, U: np.ndarray, prompt: list[int],
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
    G = pair_outputs(source, U, currents)
    fed_mask = np.zeros(U.shape[0], dtype=bool)
    fed_mask[fed] = True
    margins: dict[int, float] = {}
    cross: dict[int, float] = {}
    slices = interface.output_slices()
    for i, c in enumerate(currents):
        base = G[:, :, i] @ prompt_counts
        if i == 0:  # the last prompt position: its counts are the prompt's, fixed
            own, expected, others = np.zeros_like(base), start_state, np.zeros(0)
        else:
            own, expected = G[:, c, i], decoded_at[c]
            mask = fed_mask.copy()
            mask[c] = False
            others = G[:, mask, i]
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


# -- enumeration: memories and bounded machines ---------------------------------------------


def _enumerated_domain(source: CompiledModel, notes: list[str], budget: int,
                       progress: Progress | None) -> Domain | None:
    interface = source.interface
    alphabet = interface.sampling_alphabet
    if interface.single_symbol_input:
        lengths = [1]
    elif interface.max_input_length is not None:
        lengths = input_lengths(source, interface.max_input_length)
    else:
        notes.append("enumeration: inputs of unbounded length")
        return None
    total = sum(len(alphabet) ** n for n in lengths)
    if total > budget:
        notes.append(f"enumeration: {total:,} inputs exceed the budget of {budget:,}")
        return None
    words = [w for n in lengths for w in itertools.product(alphabet, repeat=n)]
    vocabulary = _Vocabulary()
    sequences: list[np.ndarray] = []
    margin, longest = math.inf, 0
    for start in range(0, len(words), ROLLOUT_CHUNK):
        chunk = words[start: start + ROLLOUT_CHUNK]
        for run in rollout(source, chunk, dtype="fp64", record=True):
            rows = np.ascontiguousarray(run.tokens, dtype=np.float64)
            unique, inverse = np.unique(rows, axis=0, return_inverse=True)
            ids = np.array([vocabulary.of(r) for r in unique], dtype=np.int64)
            sequences.append(ids[inverse.reshape(-1)])
            margin = min(margin, run.margin)
            longest = max(longest, rows.shape[0])
        if progress is not None:
            progress("enumerate", min(start + ROLLOUT_CHUNK, len(words)), len(words))
    m = len(vocabulary.rows)
    design, spans = _spanning_inputs(sequences, range(len(words)), m)
    certify, _ = _spanning_inputs(sequences, range(len(words) - 1, -1, -1), m)
    bases = {c: s.basis for c, s in spans.items()}
    dimension = sum(s.dim for s in spans.values())
    if interface.single_symbol_input:
        other = (", and any other key" if interface.input_other is not None
                 and interface.input_other not in interface.input_alphabet else "")
        description = f"every key ({len(interface.input_alphabet):,}){other}"
    else:
        description = (f"every input of ≤ {max(lengths)} cells ({len(words):,} inputs over "
                       f"{{{', '.join(alphabet)}}})")
    notes.append(f"enumeration: {len(words):,} inputs rolled out, {m} distinct tokens, "
                 f"smallest source margin {margin:.3g}")
    return Domain(
        scope="exact",
        description=description,
        certify_words=[words[i] for i in certify],
        design_words=[words[i] for i in design],
        dimension=dimension,
        spans=CountSpans(vocabulary=vocabulary.matrix(source.d), bases=bases,
                         margins=dict.fromkeys(bases, margin), cross=dict.fromkeys(bases, 0.0),
                         max_tokens=longest, prompt_length=len(interface.prompt)),
        notes=notes,
        max_length=max(lengths),
    )


def _spanning_inputs(sequences: list[np.ndarray], order: Sequence[int],
                     m: int) -> tuple[list[int], dict[int, _Span]]:
    """Inputs, in `order`, whose prefixes open new directions; the spans they reach.

    Batched: the count vectors of a batch's prefixes are tested against the spans at once,
    and only those left outside go through the one-at-a-time basis update."""
    spans: dict[int, _Span] = {}
    chosen: list[int] = []
    order = list(order)
    for start in range(0, len(order), SPAN_BATCH):
        batch = order[start: start + SPAN_BATCH]
        ids = [sequences[i] for i in batch]
        lengths = np.array([x.size for x in ids])
        owner = np.repeat(np.arange(len(batch)), lengths)
        tokens = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        onehot = np.zeros((tokens.size, m))
        onehot[np.arange(tokens.size), tokens] = 1.0
        counts = np.cumsum(onehot, axis=0)
        firsts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        before = np.where(firsts[:, None] > 0, counts[np.maximum(firsts - 1, 0)], 0.0)
        counts -= before[owner]
        opened = np.zeros(len(batch), dtype=bool)
        for token in np.unique(tokens).tolist():
            rows = np.flatnonzero(tokens == token)
            span = spans.setdefault(token, _Span(m))
            R = counts[rows]
            left = R - (R @ span.basis) @ span.basis.T
            outside = np.linalg.norm(left, axis=1) > COUNT_TOL * np.linalg.norm(R, axis=1)
            for row in rows[outside].tolist():
                if span.add(counts[row]):
                    opened[owner[row]] = True
        chosen.extend(batch[k] for k in np.flatnonzero(opened).tolist())
    return chosen, spans


# -- helpers ---------------------------------------------------------------------------------


def _rollouts(model: CompiledModel, words: list[Word], progress: Progress | None,
              phase: str) -> list:
    out = []
    for start in range(0, len(words), ROLLOUT_CHUNK):
        out.extend(rollout(model, words[start: start + ROLLOUT_CHUNK], dtype="fp64",
                           record=True))
        if progress is not None:
            progress(phase, min(start + ROLLOUT_CHUNK, len(words)), len(words))
    return out


def _show(word: Word) -> str:
    text = " ".join(word)
    return f"'{text[:60]}…'" if len(text) > 60 else f"'{text}'"
