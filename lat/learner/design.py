"""Data design from the certificate: few traces whose features span the program's domain.

The certificate (certificate.py) claims identifiability on the inputs whose reduced
features lie in the span of the training features. So a good training set is a small set
of input words whose prefix features span everything the domain produces. Three steps,
all through the source model as a black box (`rollout`; never the compiler):

1. **Explore.** Breadth-first over input words, the token fed for a word's last symbol is
   its *node*; a representative word per node and the observed moves (node, symbol) → node
   are kept. For an automaton a node is a (state, symbol) pair, so this finds every token
   the program can produce with a few hundred short rollouts.
2. **Target.** Features are sums over earlier tokens times the current token, so what random
   sampling misses are rare co-occurrences: token u early, token v later. For every pair of
   nodes (u, v) with v reachable from u in the observed moves, one candidate word reaches u
   (its representative), walks the shortest observed path to v, and is padded with random
   symbols to the longest allowed length (a long trace carries many prefixes, i.e. many
   candidate directions). The pool is these words plus the domain generator's own words.
3. **Select, then check.** A candidate adds directions when some prefix leaves a relative
   residual > `tol` (COVERAGE_TOL, the certificate's threshold) outside the span selected
   so far, kept as orthonormal bases per connected feature block (features.py). The
   selection pivots as a column-pivoted QR does, at the granularity of whole traces:
   passes with a halving threshold τ keep the candidates that still open ≥ τ prefixes
   outside the span (`_greedy`), first counting only strong directions (relative residual
   > STRONG) so that the designed Λ_D is not needlessly ill-conditioned, then at `tol`
   (`_pivot`); `spanning_selection` is the one-pass, longest-first form.
   Then, for up to `rounds` rounds, a fresh design sample of domain words is checked
   against the span (the certificate's own test) and its uncovered words are selected the
   same way.

The moves are a guess (a program's next token need not depend on the last token alone):
candidates are always rolled out for real, and only their real features are selected.
`design_comparison` (design_comparison.py) measures what the design buys: traces needed by
the designed set vs by random sampling (words drawn as `learn` draws them) until an
*independent* domain sample — one the design never saw — is covered.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lat.learner.certificate import (
    COVERAGE_TOL,
    outside,
    sequence_residuals,
    span_residuals,
)
from lat.learner.counts import CountCover
from lat.learner.features import block_layout, column_labels, prefix_features
from lat.learner.solve import Fit
from lat.learner.traces import chunked_rollouts
from lat.runtime.device import single_thread
from lat.runtime.execute import rollout
from lat.runtime.model import CompiledModel

__all__ = ["CHECK_CHUNK", "Design", "FeatureSpan", "Part", "design_words", "opening_words",
           "spanning_selection", "token_runs", "trace_features", "uncovered_words"]

Word = tuple[str, ...]
Part = tuple[np.ndarray, np.ndarray, np.ndarray]  # (rows, cols, vals) of one sequence
CHECK_CHUNK = 256  # sequences checked against the span at once
EXPLORE_WORDS = 4096  # most words of the shortest allowed length enumerated to explore
MAX_NODES = 512  # exploration stops growing past this many nodes
MAX_TARGETED = 20000  # targeted words kept (a random subset beyond it)
STRONG = 1e-3  # first-pass pivot threshold (relative residual); see _pivot


class FeatureSpan:
    """Orthonormal bases, per connected feature block, of the span of the rows added.

    The blocks are fixed at construction from every sequence that will be checked or added:
    each row lies inside one block, so the span of the added rows is the direct sum of the
    per-block spans, and a row's residual is the sum over its blocks (a column no added row
    uses counts fully, as in the certificate)."""

    def __init__(self, parts: Sequence[Part]):
        cols = [c for _, c, _ in parts if c.size]
        all_cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        self.support, local = np.unique(all_cols, return_inverse=True)
        offsets = np.cumsum([0] + [int(r.max()) + 1 if r.size else 0 for r, _, _ in parts])
        all_rows = np.concatenate([r + offsets[i] for i, (r, _, _) in enumerate(parts)]
                                  ) if parts else np.zeros(0, np.int64)
        labels = column_labels(all_rows, local, self.support.size)
        _, bounds, self.position = block_layout(labels)
        self.block = labels
        self.sizes = np.diff(bounds)
        self.bases = [np.zeros((int(n), 0)) for n in self.sizes]
        self.rank = 0

    def locate(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.searchsorted(self.support, cols)
        return self.block[at], self.position[at]

    def residuals(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                  n_rows: int) -> np.ndarray:
        """Relative residual ‖f − P f‖ / ‖f‖ of each row (0 for an all-zero row)."""
        return span_residuals(rows, cols, vals, n_rows, self.support, self.block,
                              self.position, self.bases)

    def _row_residuals(self, parts: Sequence[Part]) -> tuple[np.ndarray, np.ndarray]:
        lengths = [int(r.max()) + 1 if r.size else 0 for r, _, _ in parts]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if not offsets[-1]:
            return np.zeros(0), offsets
        rows = np.concatenate([r + offsets[i] for i, (r, _, _) in enumerate(parts)])
        relative = self.residuals(rows, np.concatenate([c for _, c, _ in parts]),
                                  np.concatenate([v for _, _, v in parts]), int(offsets[-1]))
        return relative, offsets

    def sequence_residuals(self, parts: Sequence[Part]) -> np.ndarray:
        """The largest row residual of each sequence."""
        relative, offsets = self._row_residuals(parts)
        return np.array([relative[a:b].max() if b > a else 0.0
                         for a, b in zip(offsets[:-1], offsets[1:], strict=True)])

    def open_rows(self, parts: Sequence[Part], tol: float) -> np.ndarray:
        """How many rows of each sequence leave a relative residual > tol: an upper bound
        on the directions the sequence would add."""
        relative, offsets = self._row_residuals(parts)
        if not relative.size:
            return np.zeros(len(parts), dtype=np.int64)
        return np.add.reduceat(np.r_[relative > tol, False].astype(np.int64),
                               offsets[:-1]) * (np.diff(offsets) > 0)

    def add(self, part: Part, tol: float) -> set[int]:
        """Add the directions of one sequence's rows left outside the span (relative
        residual > tol); returns the blocks that grew (empty: nothing was added)."""
        rows, cols, vals = part
        grown: set[int] = set()
        if rows.size == 0:
            return grown
        block, where = self.locate(cols)
        for b in np.unique(block).tolist():
            size = int(self.sizes[b])
            if self.bases[b].shape[1] == size:
                continue
            pick = block == b
            unique_rows, r_local = np.unique(rows[pick], return_inverse=True)
            F = np.zeros((unique_rows.size, size))
            F[r_local, where[pick]] = vals[pick]
            R = outside(F, self.bases[b])
            norms = np.linalg.norm(F, axis=1)
            relative = np.linalg.norm(R, axis=1) / np.maximum(norms, 1e-300)
            keep = relative > tol
            if not keep.any():
                continue
            _, s, vt = np.linalg.svd(R[keep] / norms[keep, None], full_matrices=False)
            add = vt[s > tol].T
            if add.shape[1] == 0:
                continue
            add -= self.bases[b] @ (self.bases[b].T @ add)  # re-orthogonalise
            add, _ = np.linalg.qr(add)
            before = self.bases[b].shape[1]
            self.bases[b] = np.concatenate([self.bases[b], add], axis=1)[:, :size]
            self.rank += self.bases[b].shape[1] - before
            grown.add(b)
        return grown


def trace_features(sequences: Sequence[np.ndarray]) -> list[Part]:
    """The sparse prefix features (rows, cols, vals) of each token sequence."""
    return [prefix_features(np.asarray(s, np.float64)) for s in sequences]


def _first_fit(span: FeatureSpan, parts: Sequence[Part], visit: Sequence[int], tol: float
               ) -> list[int]:
    """Visit `parts` in order; keep those that add a direction to `span` (updated)."""
    chosen: list[int] = []
    for start in range(0, len(visit), CHECK_CHUNK):
        chunk = list(visit[start : start + CHECK_CHUNK])
        residual = span.sequence_residuals([parts[i] for i in chunk])
        for i, value in zip(chunk, residual, strict=True):
            if value > tol and span.add(parts[i], tol):
                chosen.append(i)  # checked against the span at chunk start; add re-checks
    return chosen


def _greedy(span: FeatureSpan, parts: Sequence[Part], visit: Sequence[int], tol: float
            ) -> list[int]:
    """Descending-threshold greedy (the pivoting of a column-pivoted QR, by traces): pass
    over the candidates keeping those that still open ≥ τ rows outside the span, halving τ
    from the longest trace's row count down to 1. A candidate found covered is dropped for
    good (the span only grows). Fewer traces than one first-fit pass, a few passes' cost."""
    remaining = list(visit)
    counts = [int(parts[i][0].max()) + 1 if parts[i][0].size else 0 for i in remaining]
    tau = max(counts, default=0)
    chosen: list[int] = []
    while remaining and tau >= 1:
        kept: list[int] = []
        for start in range(0, len(remaining), CHECK_CHUNK):
            chunk = remaining[start : start + CHECK_CHUNK]
            opened = span.open_rows([parts[i] for i in chunk], tol)
            for i, count in zip(chunk, opened.tolist(), strict=True):
                if count >= tau:
                    count = int(span.open_rows([parts[i]], tol)[0])  # the span grew since
                    if count >= tau and span.add(parts[i], tol):
                        chosen.append(i)
                        continue
                if count:
                    kept.append(i)
        remaining, tau = kept, (tau // 2 if tau > 1 else 0)
    return chosen


def _pivot(span: FeatureSpan, parts: Sequence[Part], visit: Sequence[int], tol: float
           ) -> list[int]:
    """`_greedy` twice: first counting and adding only strong directions (relative residual
    > STRONG), so that a direction a trace reaches only faintly waits for one that reaches
    it well (a designed Λ_D is then better conditioned); then at `tol`, the traces chosen
    first visited last (choosing one again costs no trace)."""
    if tol >= STRONG:
        return _greedy(span, parts, visit, tol)
    first = _greedy(span, parts, visit, STRONG)
    taken = set(first)
    rest = _greedy(span, parts, [i for i in visit if i not in taken] + first, tol)
    return first + [i for i in rest if i not in taken]


@single_thread()
def spanning_selection(sequences: Sequence[np.ndarray], *, tol: float = COVERAGE_TOL,
                       first: Sequence[int] = ()) -> list[int]:
    """Indices of a subset of `sequences` (tokens (T, d)) whose prefix features span the
    features of every prefix of every sequence (relative residual ≤ tol); in visit order.

    The indices in `first` are visited first (in that order), then the rest longest first."""
    parts = trace_features(sequences)
    span = FeatureSpan(parts)
    head = list(dict.fromkeys(first))
    seen = set(head)
    rest = sorted((i for i in range(len(sequences)) if i not in seen),
                  key=lambda i: (-sequences[i].shape[0], i))
    return _first_fit(span, parts, head + rest, tol)


def token_runs(source: CompiledModel, words: Sequence[Word]) -> list[np.ndarray]:
    """The tokens (T, d) float64 of `source`'s rollout on each word."""
    return [np.asarray(r.tokens, np.float64)
            for r in rollout(source, list(words), dtype="fp64", record=True)] if words else []


def _explore(source: CompiledModel, lengths: Sequence[int]
             ) -> tuple[dict[bytes, Word], dict[bytes, dict[str, bytes]]]:
    """Breadth-first over words: a representative word per node (the token fed for the
    word's last symbol) and the observed moves node --symbol--> node."""
    alphabet = source.interface.sampling_alphabet
    allowed = set(lengths)
    top = max(lengths)
    prompt = len(source.interface.prompt)

    def node(tokens: np.ndarray, word: Word) -> bytes:
        at = min(prompt + len(word), tokens.shape[0]) - 1
        return tokens[at].tobytes() if at >= 0 else b""

    reach: dict[bytes, Word] = {}
    moves: dict[bytes, dict[str, bytes]] = {}
    start = min(lengths)
    if len(alphabet) ** start <= EXPLORE_WORDS:
        level = _all_words(alphabet, start)
    else:  # too many shortest words to enumerate: a random sample of them
        rng = np.random.default_rng(start)
        level = [tuple(alphabet[i] for i in rng.integers(0, len(alphabet), start))
                 for _ in range(EXPLORE_WORDS)]
    level_nodes = [node(t, w) for t, w in zip(token_runs(source, level), level, strict=True)]
    frontier: list[tuple[bytes, Word]] = []
    for w, n in zip(level, level_nodes, strict=True):
        if n not in reach:
            reach[n] = w
            frontier.append((n, w))
    while frontier:
        nxt = [(n, w, a) for n, w in frontier if len(w) + 1 <= top and len(w) + 1 in allowed
               for a in alphabet]
        words = [(*w, a) for _, w, a in nxt]
        frontier = []
        for (n, _, a), w, tokens in zip(nxt, words, token_runs(source, words), strict=True):
            m = node(tokens, w)
            moves.setdefault(n, {})[a] = m
            if m not in reach and len(reach) < MAX_NODES:
                reach[m] = w
                frontier.append((m, w))
    return reach, moves


def _all_words(alphabet: Sequence[str], length: int) -> list[Word]:
    words: list[Word] = [()]
    for _ in range(length):
        words = [(*w, a) for w in words for a in alphabet]
    return words


def _targeted(reach: dict[bytes, Word], moves: dict[bytes, dict[str, bytes]],
              lengths: Sequence[int], rng: np.random.Generator, alphabet: Sequence[str]
              ) -> list[Word]:
    """For every observed pair of nodes (u, v), v reachable from u: reach u, walk the
    shortest observed path to v, pad with random symbols to the longest allowed length."""
    top = max(lengths)
    allowed = set(lengths)
    words: list[Word] = []
    for u, prefix in reach.items():
        paths: dict[bytes, tuple[str, ...]] = {u: ()}
        queue = deque([u])
        while queue:
            n = queue.popleft()
            for a, m in moves.get(n, {}).items():
                if m not in paths:
                    paths[m] = (*paths[n], a)
                    queue.append(m)
        words.extend(w for w in ((*prefix, *path) for path in paths.values())
                     if len(w) <= top)
    words = list(dict.fromkeys(words))
    if len(words) > MAX_TARGETED:
        words = [words[i] for i in sorted(rng.choice(len(words), MAX_TARGETED, replace=False))]
    padded = [(*w, *(alphabet[i] for i in rng.integers(0, len(alphabet), top - len(w))))
              for w in words]
    return list(dict.fromkeys(w for w in padded if len(w) in allowed))


@dataclass(frozen=True)
class Design:
    """A designed training set and how it was found."""

    words: list[Word]
    nodes: int  # distinct tokens found by exploration
    explored: int  # rollouts spent exploring
    candidates: int  # pool the selection chose from
    rounds: int  # check rounds that found uncovered design words
    seconds: float
    info: dict[str, object] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {"traces": len(self.words), "nodes": self.nodes, "explored": self.explored,
                "candidates": self.candidates, "rounds": self.rounds,
                "seconds": round(self.seconds, 4)}


@single_thread()
def design_words(source: CompiledModel, lengths: Sequence[int], *, pool: int = 2000,
                 rounds: int = 4, seed: int = 0, tol: float = COVERAGE_TOL) -> Design:
    """Designed training words for `source` over words of the given lengths (module doc).

    `pool`: how many domain-generator words join the targeted candidates, and the size of
    each check round's fresh design sample. Random streams are seeded with [seed, 10+k];
    keep them apart from the stream that judges coverage."""
    from lat.learner.domain import domain_words

    clock = time.perf_counter()
    interface = source.interface
    alphabet = interface.sampling_alphabet
    rng = np.random.default_rng([seed, 10])
    reach, moves = _explore(source, lengths)
    explored = len(reach) + sum(len(m) for m in moves.values())
    words = _targeted(reach, moves, lengths, rng, alphabet)
    words += domain_words(interface, pool, lengths, np.random.default_rng([seed, 11]))
    words = list(dict.fromkeys(words))
    tokens = token_runs(source, words)
    parts = trace_features(tokens)
    span = FeatureSpan(parts)
    visit = sorted(range(len(words)), key=lambda i: (-tokens[i].shape[0], i))
    chosen = [words[i] for i in _pivot(span, parts, visit, tol)]
    candidates = len(words)
    used = 0
    for k in range(rounds):
        sample = domain_words(interface, pool, lengths, np.random.default_rng([seed, 12 + k]))
        sample_parts = trace_features(token_runs(source, sample))
        uncovered = np.flatnonzero(span.sequence_residuals(sample_parts) > tol)
        if not uncovered.size:
            break
        used += 1
        # New columns need blocks: rebuild the span from the chosen words and the sample.
        known = trace_features(token_runs(source, chosen))
        span = FeatureSpan(known + sample_parts)
        _first_fit(span, known, range(len(known)), tol)
        extra = sorted(uncovered.tolist(), key=lambda i: (-len(sample[i]), i))
        chosen += [sample[i] for i in _pivot(span, sample_parts, extra, tol)]
        candidates += len(sample)
    return Design(words=chosen, nodes=len(reach), explored=explored, candidates=candidates,
                  rounds=used, seconds=time.perf_counter() - clock)


def opening_words(source: CompiledModel, cover: CountCover, words: Sequence[Word],
                  progress: Callable[[str, int, int], None] | None = None,
                  phase: str = "design") -> list[Word] | None:
    """The words, in order, whose rollout through `source` opens a count span of `cover`
    (counts.py), each added to `cover` as it is taken: a spanning subset of what
    `uncovered_words` would give, with every word's prefixes in the training span once
    these are trained on. None when the vocabulary outgrows the cover (`cover.full`).

    Checked a chunk at a time in count space (|U| numbers a prefix instead of its
    features); only the chunk's opening words are re-checked one by one as the span grows."""
    found: list[Word] = []
    done = 0
    for runs in chunked_rollouts(source, words, progress=progress, phase=phase):
        tokens = [np.asarray(r.tokens, np.float64) for r in runs]
        opened = cover.opens(tokens)
        if cover.full:
            return None
        for i in np.flatnonzero(opened).tolist():  # their tokens are indexed already
            if cover.add(tokens[i]):
                found.append(tuple(words[done + i]))
        done += len(runs)
    return found


def uncovered_words(source: CompiledModel, fitted: Fit, words: Sequence[Word],
                    progress: Callable[[str, int, int], None] | None = None,
                    phase: str = "design") -> list[Word]:
    """The words whose rollout through `source` has a prefix outside the training span of
    `fitted` (the certificate's test, relative residual > COVERAGE_TOL), in order.

    Rolled out and checked a chunk at a time: only the uncovered words are kept, never
    every run's tokens (a design sample of long machine runs is gigabytes of them)."""
    found: list[Word] = []
    done = 0
    for runs in chunked_rollouts(source, words, progress=progress, phase=phase):
        residuals = sequence_residuals(fitted, [r.tokens for r in runs])
        found.extend(w for w, r in zip(words[done: done + len(runs)], residuals, strict=True)
                     if r > COVERAGE_TOL)
        done += len(runs)
    return found
