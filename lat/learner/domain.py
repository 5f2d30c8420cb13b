"""The inputs a certificate speaks about, and which of them were enumerated or sampled.

Every program draws its tokens from a finite vocabulary U, so S_t = Σ_u n_u(t) u uᵀ: the
features of a prefix are a fixed *linear* map of its count vector n(t) ∈ N^|U|, given the
current token c. Coverage of a whole domain is therefore a question about the linear span
L_c of the count vectors of the domain's prefixes that end at c (docs/ARCHITECTURE.md,
"The certificate"). `build_domain` computes those spans exactly where it can:

- **token graph** (automata, both placements): when the source's decoded outputs are a
  function of the current token alone — *proven from its weights*, not assumed (see
  `token_graph.token_determined`) — the runs are walks in a finite graph over the decoded states.
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
from collections.abc import Callable, Sequence

import numpy as np

from lat.learner.counts import COUNT_TOL, CountSpans, Domain, Span, Vocabulary, pair_outputs
from lat.learner.token_graph import token_graph_domain
from lat.learner.traces import Traces, chunked_rollouts, sample_words
from lat.runtime.errors import InputError
from lat.runtime.execute import rollout
from lat.runtime.interface import Interface
from lat.runtime.model import CompiledModel

Word = tuple[str, ...]
Progress = Callable[[str, int, int], None]

EXACT_BUDGET = 20_000  # inputs enumerated at most for an exact finite domain
ROLLOUT_CHUNK = 2048
SPAN_BATCH = 2048  # inputs whose prefixes are tested against the spans at once

__all__ = ["COUNT_TOL", "EXACT_BUDGET", "CountSpans", "Domain", "build_domain",
           "domain_words", "input_lengths", "pair_outputs", "recorded_domain",
           "sample_words_of_lengths"]


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
        raise InputError(f"the model accepts no input word of length 0..{max_len}")
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
    not_exact: str = "exact analysis not asked for",
) -> Domain:
    """The exact domain where the program allows it, else a labelled sample.

    `max_len` bounds the sampled words (and is the design length of exact spanning words);
    `samples` is the size of a sample; `budget` the most inputs enumerated exactly;
    `not_exact` the note that says why, when `exact` is False.
    """
    notes: list[str] = []
    if exact:
        graph = token_graph_domain(source, notes, seed, design_length or max_len, progress)
        if graph is not None:
            return graph
        finite = _enumerated_domain(source, notes, budget, progress)
        if finite is not None:
            return finite
    else:
        notes.append(not_exact)
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
    vocabulary = Vocabulary()
    sequences: list[np.ndarray] = []
    margin, longest = math.inf, 0
    for runs in chunked_rollouts(source, words, chunk=ROLLOUT_CHUNK, progress=progress,
                                 phase="enumerate"):
        for run in runs:
            rows = np.ascontiguousarray(run.tokens, dtype=np.float64)
            # distinct rows by their bytes: np.unique(axis=0) is slow on wide rows
            keys = rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1]))).reshape(-1)
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            ids = np.array([vocabulary.of(rows[i]) for i in first], dtype=np.int64)
            sequences.append(ids[inverse.reshape(-1)])
            margin = min(margin, run.margin)
            longest = max(longest, rows.shape[0])
    m = len(vocabulary.rows)
    design, spans = _spanning_inputs(sequences, range(len(words)), m)
    certify, _ = _spanning_inputs(sequences, range(len(words) - 1, -1, -1), m)
    bases = {c: s.basis.copy() for c, s in spans.items()}
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
                     m: int) -> tuple[list[int], dict[int, Span]]:
    """Inputs, in `order`, whose prefixes open new directions; the spans they reach.

    Batched: the count vectors of a batch's prefixes are tested against the spans at once,
    and only those left outside go through the one-at-a-time basis update."""
    spans: dict[int, Span] = {}
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
            span = spans.setdefault(token, Span(m))
            R = counts[rows]
            left = R - (R @ span.basis) @ span.basis.T
            outside = np.linalg.norm(left, axis=1) > COUNT_TOL * np.linalg.norm(R, axis=1)
            for row in rows[outside].tolist():
                if span.add(counts[row]):
                    opened[owner[row]] = True
        chosen.extend(batch[k] for k in np.flatnonzero(opened).tolist())
    return chosen, spans


def recorded_domain(traces: Traces, domain_max_len: int | None) -> Domain:
    """The domain of a learn from traces alone: the recorded inputs, nothing more."""
    longest = max((len(w) for w in traces.inputs), default=0)
    if domain_max_len is not None and domain_max_len > longest:
        raise InputError(
            f"the traces hold inputs of at most {longest} symbols; a domain up to "
            f"{domain_max_len} cannot be certified from them (give the program that made "
            "them, or record longer inputs)")
    return Domain(scope="recorded",
                  description=f"the {len(traces):,} recorded inputs only (length ≤ {longest}); "
                  "no source program defines a domain beyond them",
                  certify_words=list(traces.inputs), max_length=longest)


