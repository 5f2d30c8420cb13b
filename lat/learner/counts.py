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

from lat.runtime.model import CompiledModel

Word = tuple[str, ...]
COUNT_TOL = 1e-9  # relative residual above which a count vector opens a new direction

__all__ = ["COUNT_TOL", "CountSpans", "Domain", "Hull", "Span", "Vocabulary",
           "iter_pair_outputs", "pair_outputs", "relative_residual"]


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
    U = torch.from_numpy(np.asarray(vocabulary, dtype=np.float64))
    C = U[list(currents)]
    dense = model.dense()  # sparse weights (a big table): the einsums need dense ones
    V = dense.V.to(torch.float64)
    Q = dense.Q.to(torch.float64)
    scale = float(model.scale)
    value = torch.einsum("hod,ud->hou", V, U)  # V_h u
    match = torch.einsum("ud,hde,ce->huc", U, Q, C)  # uᵀ Q_h c
    return (scale * torch.einsum("hou,huc->ouc", value, match)).numpy()


PAIR_BLOCK_FLOATS = 1 << 24  # G entries computed at once by iter_pair_outputs


def iter_pair_outputs(model: CompiledModel, vocabulary: np.ndarray,
                      currents: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(i, G[:, :, i]) for every current token, computed a block of currents at a time so
    that memory stays bounded for large vocabularies (see `pair_outputs`)."""
    per_current = max(1, model.d_out * vocabulary.shape[0])
    step = max(1, PAIR_BLOCK_FLOATS // per_current)
    for first in range(0, len(currents), step):
        G = pair_outputs(model, vocabulary, currents[first: first + step])
        for j in range(G.shape[2]):
            yield first + j, G[:, :, j]
