"""Count vectors of prefixes over a finite token vocabulary, and their spans.

The shared vocabulary of the exact domain analysis (docs/ARCHITECTURE.md, "The
certificate"): a prefix's attention state is S_t = Σ_u n_u(t) u uᵀ, so what matters of a
prefix is its count vector n(t) and its current token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lat.learner.compress import PrefixCounts
from lat.runtime.model import CompiledModel

Word = tuple[str, ...]
COUNT_TOL = 1e-9  # relative residual above which a count vector opens a new direction

__all__ = ["COUNT_TOL", "CountCover", "CountSpans", "Domain", "Hull", "PairOutputs", "Span",
           "Vocabulary", "iter_pair_outputs", "pair_outputs", "relative_residual"]


class Span:
    """An orthonormal basis, grown one vector at a time, of a subspace of R^m.

    The basis is stored row-major, one basis vector per row, in an array whose capacity
    doubles when full (amortised O(1) growth, memory ∝ the dimension reached)."""

    def __init__(self, m: int) -> None:
        self._m = m
        self._rows = np.empty((min(m, 8), m))
        self._k = 0

    @property
    def dim(self) -> int:
        return self._k

    @property
    def basis(self) -> np.ndarray:
        """(m, dim): the orthonormal basis as columns."""
        return self._rows[: self._k].T

    def widen(self, m: int) -> None:
        """Embed the span in R^m, m ≥ the current width: new coordinates are zero in every
        basis vector (a vocabulary that grew)."""
        if m > self._m:
            self._rows = np.pad(self._rows, ((0, 0), (0, m - self._m)))
            self._m = m

    def _project_out(self, v: np.ndarray) -> np.ndarray:
        rows = self._rows[: self._k]
        return v - (rows @ v) @ rows

    def residual(self, v: np.ndarray) -> np.ndarray:
        return self._project_out(self._project_out(v))  # twice is enough (Kahan, Parlett)

    def add(self, v: np.ndarray) -> bool:
        """Add `v`'s direction if it leaves a relative residual > COUNT_TOL; True if added."""
        norm = float(np.linalg.norm(v))
        if norm == 0.0 or self._k == self._m:
            return False
        r = self._project_out(v)
        if float(np.linalg.norm(r)) <= COUNT_TOL * norm:  # one pass can only overestimate
            return False
        r = self._project_out(r)
        rn = float(np.linalg.norm(r))
        if rn <= COUNT_TOL * norm:
            return False
        if self._k == self._rows.shape[0]:
            grown = np.empty((min(self._m, 2 * self._k), self._m))
            grown[: self._k] = self._rows[: self._k]
            self._rows = grown
        self._rows[self._k] = r / rn
        self._k += 1
        return True


class CountCover:
    """Per current token c, the span L_c of the count vectors of every prefix added that
    ends at c: the count-space form of the training span, for data design.

    A prefix's reduced features are f = M_c n, linear in its count vector n given its
    current token c (compress.py). So a prefix whose n lies in L_c has its features in the
    span of the added prefixes' features: a word none of whose prefixes *opens* L_c (relative
    residual > COUNT_TOL) adds nothing a fit could use. The converse does not hold (M_c may
    have a kernel): a word can open L_c and add no feature direction, so a design that
    covers counts may take a trace a feature design would not, never one fewer.

    Vocabulary ids are numbered in order of first appearance; count vectors over ids seen
    later are longer, and the stored bases grow zero columns. `max_vocabulary` bounds the
    count space (memory: Σ_c dim L_c × vocabulary × 8 bytes); past it `full` is set, `opens`
    answers True for every sequence and `add` adds nothing (callers fall back to the
    features)."""

    def __init__(self, max_vocabulary: int) -> None:
        self.max_vocabulary = max_vocabulary
        self.index: dict[bytes, int] = {}
        self.spans: dict[int, Span] = {}  # L_c per current token id c
        self.full = False

    @property
    def dimension(self) -> int:
        """Σ_c dim L_c."""
        return sum(span.dim for span in self.spans.values())

    def _prefix_counts(self, sequences: Sequence[np.ndarray]) -> PrefixCounts:
        counts = PrefixCounts(sequences, self.index)
        self.full = self.full or counts.vocabulary > self.max_vocabulary
        return counts

    def _span(self, c: int, u: int) -> Span:
        """L_c over the first u ids."""
        span = self.spans.setdefault(c, Span(u))
        span.widen(u)
        return span

    def opens(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Whether some prefix of each sequence opens its L_c (nothing is added)."""
        counts = self._prefix_counts(sequences)
        opened = np.zeros(len(sequences), dtype=bool)
        if self.full:  # no longer answers: every sequence may open
            return ~opened
        if not counts.ids.size:
            return opened
        owner = np.repeat(np.arange(len(sequences)),
                          [np.asarray(s).shape[0] for s in sequences])
        u = counts.vocabulary
        for c in np.unique(counts.ids).tolist():
            rows = np.flatnonzero(counts.ids == c)
            N = counts.counts_over(rows, u)
            basis = self._span(c, u).basis
            left = N - (N @ basis) @ basis.T
            norms = np.linalg.norm(N, axis=1)
            opened[owner[rows[np.linalg.norm(left, axis=1) > COUNT_TOL * norms]]] = True
        return opened

    def add(self, sequence: np.ndarray) -> bool:
        """Add every prefix of one sequence; True when one opened its L_c."""
        counts = self._prefix_counts([sequence])
        if self.full or not counts.ids.size:
            return False
        u = counts.vocabulary
        N = counts.counts_over(np.arange(counts.ids.size), u)
        grew = False
        for c, n in zip(counts.ids.tolist(), N, strict=True):
            grew |= self._span(c, u).add(n)
        return grew


class Hull:
    """The affine hull of a set of count vectors: a point and an orthonormal direction basis."""

    def __init__(self, point: np.ndarray) -> None:
        self.point = point
        self.directions = Span(point.size)

    def add(self, v: np.ndarray) -> bool:
        return self.directions.add(v - self.point)


@dataclass(frozen=True)
class CountSpans:
    """Exact per-token spans of the domain's count vectors, for the equivalence proof.

    `bases[c]` is an orthonormal basis (m, r) of L_c for every token c at which an output is
    decoded; `margins[c]` the source's decode margin there and `cross[c]` the largest output
    any other fed token adds per occurrence (0 for a token-determined source; see
    `token_graph.token_determined`). `max_tokens` bounds the prefix length in tokens (None: every
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


class Vocabulary:
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


def relative_residual(span: Span, v: np.ndarray) -> float:
    """‖v − P v‖ / ‖v‖, P the projection onto `span` (0 for v = 0)."""
    norm = float(np.linalg.norm(v))
    return float(np.linalg.norm(span.residual(v))) / norm if norm else 0.0


def pair_outputs(model: CompiledModel, vocabulary: np.ndarray,
                 currents: Sequence[int]) -> np.ndarray:
    """G[:, u, i] = Σ_h V_h u (uᵀ Q_h c_i): the output one occurrence of token u adds at a
    position whose current token is c_i = vocabulary[currents[i]] (float64).

    y_t = Σ_u n_u(t) G[:, u, c_t]: the whole model on a finite vocabulary."""
    return PairOutputs(model, vocabulary).block(currents)


class PairOutputs:
    """`pair_outputs` of one model on one vocabulary, with the products that do not depend
    on the current token — V_h u and uᵀ Q_h, for every u — computed once (they dominated
    when recomputed for every block of currents: 25 of the 80 s that learning a
    1,000-entry memory took)."""

    def __init__(self, model: CompiledModel, vocabulary: np.ndarray) -> None:
        self.vocabulary = torch.from_numpy(np.asarray(vocabulary, dtype=np.float64))
        dense = model.dense()  # sparse weights (a big table): the products need dense ones
        V = dense.V.to(torch.float64)
        Q = dense.Q.to(torch.float64)
        self.value = float(model.scale) * torch.einsum("hod,ud->hou", V, self.vocabulary)
        self.keys = torch.einsum("ud,hde->hue", self.vocabulary, Q)  # uᵀ Q_h

    def block(self, currents: Sequence[int]) -> np.ndarray:
        """G[:, :, i] for each current token index in `currents`: (d_out, |U|, len)."""
        match = torch.einsum("hue,ce->huc", self.keys, self.vocabulary[list(currents)])
        return torch.einsum("hou,huc->ouc", self.value, match).numpy()

    def at(self, current: int, rows: np.ndarray) -> np.ndarray:
        """G[:, rows, c] for one current token: (d_out, len(rows)), touching only those
        tokens u."""
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        match = self.keys[:, index, :] @ self.vocabulary[current]  # (H, rows)
        return torch.einsum("hor,hr->or", self.value[:, :, index], match).numpy()


PAIR_BLOCK_FLOATS = 1 << 24  # G entries computed at once by iter_pair_outputs


def iter_pair_outputs(model: CompiledModel, vocabulary: np.ndarray,
                      currents: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(i, G[:, :, i]) for every current token, computed a block of currents at a time so
    that memory stays bounded for large vocabularies (see `pair_outputs`)."""
    pairs = PairOutputs(model, vocabulary)
    per_current = max(1, model.d_out * vocabulary.shape[0])
    step = max(1, PAIR_BLOCK_FLOATS // per_current)
    for first in range(0, len(currents), step):
        G = pairs.block(currents[first: first + step])
        for j in range(G.shape[2]):
            yield first + j, G[:, :, j]
