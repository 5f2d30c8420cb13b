"""Proven equivalence of a learned model with its source on an exact domain.

On a finite vocabulary the model's output at a prefix with count vector n and current
token c is y = G_c n (counts.pair_outputs). The learned and source outputs differ by
D_c n, D_c = G_c(learned) − G_c(source), and every domain prefix ending at c has n in the
span L_c (domain.py), so with B_c an orthonormal basis of L_c

    ‖D_c n‖_∞ ≤ ‖D_c B_c‖₂ ‖n‖₂ ≤ ε_c · t,     ε_c = ‖D_c B_c‖₂, t = ‖n‖₁ the prefix length.

The source decodes with margin μ_c, up to a drift of ρ_c per token from other tokens
(0 for a compiled model), so the learned decode equals the source's at every prefix of
t tokens with 2 t (ε_c + ρ_c) < μ_c. That gives the length up to which every decode is
proven equal: every length when ε_c + ρ_c = 0, and in practice far beyond any input when
ε_c is round-off. This is a statement about exact arithmetic with the artifact's stored
weights; the runtime's own rounding is guarded by its margin check at run time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lat.learner.counts import CountSpans, PairOutputs
from lat.runtime.model import CompiledModel

__all__ = ["Equivalence", "prove_equivalence"]


@dataclass(frozen=True)
class Equivalence:
    """How the learned model's equality with the source is known.

    method: "proven" (the bound below over an exact domain), "checked" (compared on sampled
    inputs only) or "recorded" (reproduces recorded traces; no source to compare with).
    `up_to_length` is in input symbols: every decode of every domain input of at most that
    many symbols is proven equal; None with `proven` means every length in the domain.
    """

    method: str
    proven: bool
    up_to_length: int | None
    error_bound: float | None  # max_c ε_c
    checked: int  # inputs compared by running both models (the cross-check)
    mismatches: int
    statement: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def proof_bound(source: CompiledModel, learned: CompiledModel,
                spans: CountSpans) -> tuple[float, int | None, bool]:
    """(max ε_c, proven length in input symbols or None for every length, proven at all)."""
    worst_eps, tokens_proven = 0.0, math.inf
    source_pairs = PairOutputs(source, spans.vocabulary)
    learned_pairs = PairOutputs(learned, spans.vocabulary)
    for c in sorted(spans.bases):
        basis = spans.bases[c]
        rows = np.flatnonzero(np.any(basis != 0.0, axis=1))  # the tokens L_c involves
        if basis.shape[1] and rows.size:
            D = learned_pairs.at(c, rows) - source_pairs.at(c, rows)
            eps = float(np.linalg.norm(D @ basis[rows], 2))
        else:
            eps = 0.0
        worst_eps = max(worst_eps, eps)
        drift = eps + spans.cross[c]
        if drift > 0:
            # the largest t with 2 t drift < μ_c
            tokens_proven = min(tokens_proven, math.ceil(spans.margins[c] / (2 * drift)) - 1)
    if spans.max_tokens is not None:
        proven = tokens_proven >= spans.max_tokens
        return worst_eps, None, proven
    if math.isinf(tokens_proven):
        return worst_eps, None, True
    symbols = int(tokens_proven) - spans.prompt_length
    return worst_eps, max(symbols, -1), symbols >= 0


def prove_equivalence(source: CompiledModel, learned: CompiledModel, spans: CountSpans,
                      *, checked: int, mismatches: int) -> Equivalence:
    """The proof on an exact domain, with the sampled cross-check's counts beside it."""
    eps, length, proven = proof_bound(source, learned, spans)
    if mismatches:
        # The bound cannot hold when running both models disagrees: say so, claim nothing.
        return Equivalence("checked", False, None, eps, checked, mismatches,
                           f"{mismatches} of {checked} inputs decode differently")
    if not proven:
        return Equivalence("checked", False, None, eps, checked, mismatches,
                           f"the error bound ε = {eps:.3g} per token is too large to prove "
                           "any decode equal; compared on checked inputs only")
    if length is None:
        text = ("every decode of every domain input is proven equal to the source's "
                f"(error ≤ {eps:.3g} per token against decode margin "
                f"≥ {min(spans.margins.values()):.3g})")
    else:
        text = (f"every decode of every input of ≤ {length:,} symbols is proven equal to the "
                f"source's (error ≤ {eps:.3g} per token)")
    return Equivalence("proven", True, length, eps, checked, mismatches, text)
