"""Lower an associative memory (weights placement), with one-hot or random key embeddings.

Token: the key, one-hot over the table's keys (plus an `other` slot when there is a
default, which every unknown key takes). One head, Q = I on the key block, and
V = Σ_k e_value(k) u_kᵀ where u_k is the key's embedding. A query token u_q attends only to
itself (the prompt is the single query token), so y = (u_qᵀ u_q)·V u_q = Σ_k ⟨u_k, u_q⟩ e_value(k).

One-hot keys give y = e_value(q): margin 1. A big one-hot table (dense weights above
`SPARSE_LOWERING_BYTES`) is lowered straight to sparse COO tensors — K nonzeros in V, K in
Q — and its margin is proven from the keys' orthonormality (Gram = I, `onehot_margin`)
instead of a K×K Gram matrix; the dense path stays the reference (tested equal). Random
unit keys in D dimensions give crosstalk
Σ_{k≠q} ⟨u_k, u_q⟩ on the other values; the margin is computed exactly over every key, and
compilation fails — naming the smallest D that works for the seed — when it is not above
what fp32 execution resolves (a positive margin of 1e-6 would still be a coin toss).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from lat.compiler.ir import CheckedMemory
from lat.compiler.lower import Estimate, Lowered
from lat.runtime.execute import resolution
from lat.runtime.forms.sparse import coo
from lat.runtime.interface import Interface, OutputField, TokenField

OTHER = "<other>"
MAX_SEARCH_DIM = 1 << 14
#: dense V and Q above this many bytes are built sparse (one-hot keys only)
SPARSE_LOWERING_BYTES = 64 << 20


class EmbeddingTooSmall(ValueError):
    """Random keys in this dimension collide: the decode margin is not positive."""


@dataclass(frozen=True)
class Embedding:
    """How keys are embedded: one-hot, or random unit vectors in `dim` dimensions."""

    kind: str = "onehot"  # "onehot" | "random"
    dim: int | None = None
    seed: int = 0


def key_slots(memory: CheckedMemory) -> tuple[str, ...]:
    """The key field's values: the table's keys, then `other` when there is a default."""
    keys = tuple(memory.keys)
    if memory.default is None:
        return keys
    other = OTHER
    while other in keys:
        other = "<" + other + ">"
    return (*keys, other)


def random_unit_keys(count: int, dim: int, seed: int) -> np.ndarray:
    """`count` random unit vectors in R^dim (rows), reproducible from the seed."""
    vectors = np.random.default_rng(seed).standard_normal((count, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_margin(keys: np.ndarray, value_of_key: np.ndarray, values: int) -> float:
    """min over keys q of score(value(q)) − max other score, with score = Σ ⟨u_k, u_q⟩."""
    gram = keys @ keys.T  # (keys, keys): ⟨u_k, u_q⟩
    scores = np.zeros((values, len(keys)))
    np.add.at(scores, value_of_key, gram)  # scores[v, q] = Σ_{k: value(k)=v} ⟨u_k, u_q⟩
    correct = scores[value_of_key, np.arange(len(keys))]
    scores[value_of_key, np.arange(len(keys))] = -np.inf
    return float((correct - scores.max(axis=0)).min()) if values > 1 else float(correct.min())


def onehot_margin(value_of_key: np.ndarray, values: int) -> float:
    """`exact_margin` of one-hot keys without their K×K Gram matrix.

    One-hot keys are orthonormal, so the Gram matrix is I and scores[v, q] = [value(q) = v]:
    the right value scores 1 and every other 0 (with a single value, its score 1). Every
    key must name a value in range, which is checked here rather than assumed."""
    if value_of_key.size and not (int(value_of_key.min()) >= 0
                                  and int(value_of_key.max()) < values):
        raise ValueError("a key's value is outside the value field")
    return 1.0


def uses_sparse_weights(keys: int, width: int, values: int, embedding: Embedding) -> bool:
    """Whether `lower_memory` builds sparse weights: one-hot keys, dense V and Q above
    `SPARSE_LOWERING_BYTES` (the size estimate uses the same rule)."""
    return embedding.kind == "onehot" and 4 * (values * width + width * width) > \
        SPARSE_LOWERING_BYTES


#: bytes per key of a sparse lowering's working set: the COO entries of V and Q, their
#: copies in a save, and the interface's per-key Python strings and tables
SPARSE_BYTES_PER_KEY = 2048


def lowering_estimate(keys: int, values: int, placement: str = "weights",
                      dim: int | None = None) -> Estimate:
    """What lowering a memory of `keys` key slots and `values` values allocates: dense
    weights plus the margin check's Gram matrices, or for a big one-hot table (sparse
    weights, `uses_sparse_weights`) a few KB per key. `weight_bytes` is always the dense
    fp32 size (what the weights would be dense)."""
    width = dim or keys
    d = width + (values if placement == "context" else 0)
    if placement == "weights" and dim is None and uses_sparse_weights(
            keys, width, values, Embedding()):
        dense = Estimate.of(heads=1, d=d, d_out=values, working=0, steps=1)
        return Estimate(1, d, values, dense.weight_bytes, SPARSE_BYTES_PER_KEY * keys, 1)
    working = 8 * keys * width + 16 * keys * keys + 8 * values * keys
    return Estimate.of(heads=1, d=d, d_out=values, working=working, steps=1)


def fp32_resolves(margin: float, keys: np.ndarray) -> bool:
    """Is the margin above what fp32 execution resolves at these outputs' magnitude?"""
    magnitude = max(1.0, float(np.abs(keys @ keys.T).sum(axis=0).max()))
    floor = float(resolution(torch.float32, torch.tensor(magnitude)))
    return margin > floor


def smallest_working_dim(value_of_key: np.ndarray, values: int, seed: int, start: int) -> int:
    """The smallest dimension ≥ start whose random keys (same seed) give a margin that fp32
    resolves."""
    dim = max(start, 1)
    while dim <= MAX_SEARCH_DIM:
        keys = random_unit_keys(len(value_of_key), dim, seed)
        if fp32_resolves(exact_margin(keys, value_of_key, values), keys):
            return dim
        dim += 1
    raise EmbeddingTooSmall(f"no dimension up to {MAX_SEARCH_DIM} separates the keys")


def lower_memory(memory: CheckedMemory, embedding: Embedding = Embedding(),
                 sparse: bool | None = None) -> Lowered:
    """One head over the key embedding (see the module docstring). `sparse`: build sparse
    COO weights (one-hot keys only); None decides by size (`uses_sparse_weights`)."""
    slots = key_slots(memory)
    values = tuple(memory.values)
    value_index = {value: i for i, value in enumerate(values)}
    value_of_key = np.array(
        [value_index[memory.table.get(k, memory.default)] for k in slots], dtype=np.int64
    )
    if sparse is None:
        sparse = uses_sparse_weights(len(slots), len(slots), len(values), embedding)
    if sparse and embedding.kind != "onehot":
        raise ValueError("sparse weights need one-hot keys (random keys are dense)")
    if sparse:
        return _lower_sparse(memory, slots, values, value_of_key)
    if embedding.kind == "onehot":
        # orthonormal keys: the exact margin without a K×K Gram matrix (`onehot_margin`,
        # tested equal to `exact_margin`), V[value(k), k] = 1 without a K×K scatter
        width = len(slots)
        margin = onehot_margin(value_of_key, len(values))
        V = np.zeros((1, len(values), width), dtype=np.float32)
        V[0, value_of_key, np.arange(width)] = 1.0
        Q = np.eye(width, dtype=np.float32)[None]
        interface = _interface(memory, slots, values, TokenField("key", "onehot", slots))
        return Lowered(V=V, Q=Q, interface=interface, decode_margin=margin,
                       margin_note="one-hot keys: y = e_value exactly")
    dim = embedding.dim or len(slots)
    keys = random_unit_keys(len(slots), dim, embedding.seed)
    key_field = TokenField("key", "embedding", slots, vectors=tuple(map(tuple, keys)))
    margin = exact_margin(keys, value_of_key, len(values))
    if not fp32_resolves(margin, keys):
        best = smallest_working_dim(value_of_key, len(values), embedding.seed, keys.shape[1] + 1)
        raise EmbeddingTooSmall(
            f"random {keys.shape[1]}-dimensional keys (seed {embedding.seed}) give decode "
            f"margin {margin:.3g} for memory '{memory.name}', too small for fp32 to keep the "
            f"keys apart; --dim {best} is the smallest that works for this seed"
        )
    interface = _interface(memory, slots, values, key_field)
    V = np.zeros((1, len(values), keys.shape[1]), dtype=np.float32)
    np.add.at(V[0], value_of_key, keys.astype(np.float32))
    Q = np.eye(keys.shape[1], dtype=np.float32)[None]
    note = (f"random unit keys in {keys.shape[1]} dimensions (seed {embedding.seed}): exact "
            "margin over every key, crosstalk included")
    return Lowered(V=V, Q=Q, interface=interface, decode_margin=margin, margin_note=note)


def _interface(memory: CheckedMemory, slots: tuple[str, ...], values: tuple[str, ...],
               key_field: TokenField) -> Interface:
    return Interface(
        kind="memory",
        program=memory.name,
        input_alphabet=tuple(memory.keys),
        token_fields=(key_field,),
        output_fields=(OutputField("value", values),),
        prompt=({"key": ("input",)},),
        feed=(),
        result_field="value",
        max_steps=0,
        input_other=slots[-1] if memory.default is not None else None,
        single_symbol_input=True,
    )


def _lower_sparse(memory: CheckedMemory, slots: tuple[str, ...], values: tuple[str, ...],
                  value_of_key: np.ndarray) -> Lowered:
    """One-hot keys as sparse COO weights: V[0, value(k), k] = 1 and Q = I, never dense."""
    keys = len(slots)
    margin = onehot_margin(value_of_key, len(values))
    interface = _interface(memory, slots, values, TokenField("key", "onehot", slots))
    column = torch.arange(keys)
    V = coo(torch.stack([torch.zeros(keys, dtype=torch.long), torch.from_numpy(value_of_key),
                         column]), torch.ones(keys, dtype=torch.float32), (1, len(values), keys))
    Q = coo(torch.stack([torch.zeros(keys, dtype=torch.long), column, column]),
            torch.ones(keys, dtype=torch.float32), (1, keys, keys), coalesced=True)
    return Lowered(V=V, Q=Q, interface=interface, decode_margin=margin,
                   margin_note="one-hot keys: y = e_value exactly (sparse weights)")


# -- context placement: the paper's associative-memory construction --------------------------


def worst_case_margin(keys: np.ndarray) -> float:
    """A margin bound for every table over these keys: 1 − 2·max_q Σ_{k≠q} |⟨u_k, u_q⟩|."""
    gram = np.abs(keys @ keys.T)
    np.fill_diagonal(gram, 0.0)
    return float(1.0 - 2.0 * gram.sum(axis=0).max()) if len(keys) > 1 else 1.0


def _working_context_dim(keys: int, seed: int, tried: int) -> str:
    """Advice naming a dimension whose keys (same seed) keep every table apart.

    The worst-case bound needs Σ|⟨u_k,u_q⟩| < 1/2, i.e. D of order keys², so a linear scan
    is too slow: double until one works, then bisect (the bound is not strictly monotone
    in D, so this finds *a* working dimension near the smallest, not a proven minimum).
    """
    def works(dim: int) -> bool:
        return worst_case_margin(random_unit_keys(keys, dim, seed)) > 0

    high = max(2 * tried, 1)
    while not works(high):
        if high > MAX_SEARCH_DIM:
            return f"no dimension up to {MAX_SEARCH_DIM} works: use --embedding onehot"
        high *= 2
    low = max(tried, high // 2)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if works(middle) else (middle, high)
    return f"--dim {high} works for this seed"


def lower_memory_context(keys: int, values: int, embedding: Embedding = Embedding()) -> Lowered:
    """Universal weights for every memory of ≤ `keys` keys and ≤ `values` values.

    Tokens are [key; value] (S1 §4.2): the table's pairs form the prompt, the query is
    [u_q; 0]. One head with Q = [[I,0],[0,0]] and V = [[0,0],[0,I]]:
    y = Σ_j ⟨u_j, u_q⟩ e_(v_j) + ‖u_q‖²·0 — the query's own value slot is zero, so the dropped
    term of S1's eq. 14 vanishes by construction.
    """
    key_slots_ = tuple(f"<k{i}>" for i in range(keys))
    value_slots = tuple(f"<v{i}>" for i in range(values))
    if embedding.kind == "onehot":
        vectors = np.eye(keys)
        key_field = TokenField("key", "onehot", key_slots_)
    else:
        vectors = random_unit_keys(keys, embedding.dim or keys, embedding.seed)
        key_field = TokenField("key", "embedding", key_slots_, vectors=tuple(map(tuple, vectors)))
    margin = worst_case_margin(vectors)
    if margin <= 0:
        raise EmbeddingTooSmall(
            f"random {vectors.shape[1]}-dimensional keys (seed {embedding.seed}) cannot keep "
            f"{keys} keys apart for every table (margin bound {margin:.3g} ≤ 0); "
            f"{_working_context_dim(keys, embedding.seed, vectors.shape[1])}"
        )
    width = vectors.shape[1]
    interface = Interface(
        kind="memory",
        program="<universal>",
        input_alphabet=key_slots_,
        token_fields=(key_field, TokenField("value", "onehot", value_slots)),
        output_fields=(OutputField("value", value_slots),),
        prompt=({"key": ("input",)},),
        feed=(),
        result_field="value",
        max_steps=0,
        single_symbol_input=True,
        extra={"placement": "context", "keys": keys, "values": values},
    )
    Q = np.zeros((1, width + values, width + values), dtype=np.float32)
    Q[0, :width, :width] = np.eye(width)
    V = np.zeros((1, values, width + values), dtype=np.float32)
    V[0, :, width:] = np.eye(values)
    return Lowered(V=V, Q=Q, interface=interface, decode_margin=margin,
                   margin_note="worst case over every table of these sizes")


def lower_memory_context_for(memory: CheckedMemory, embedding: Embedding = Embedding()) -> Lowered:
    """The universal memory sized for `memory` (its key slots and values)."""
    return lower_memory_context(len(key_slots(memory)), len(memory.values), embedding)


def bind_memory(interface: Interface, memory: CheckedMemory) -> Interface:
    """The universal memory's interface with `memory`'s table as its prompt."""
    slots = key_slots(memory)
    values = tuple(memory.values)
    key_field = interface.token_field("key")
    value_capacity = len(interface.token_field("value").values)
    if len(slots) > len(key_field.values) or len(values) > value_capacity:
        raise ValueError(
            f"memory '{memory.name}' needs {len(slots)} key slots and {len(values)} values; "
            f"this executor holds {len(key_field.values)} and {value_capacity}"
        )
    key_names = (*slots, *key_field.values[len(slots):])
    value_names = (*values, *interface.token_field("value").values[len(values):])
    table = tuple(
        {"key": (f"const:{k}",), "value": (f"const:{memory.table.get(k, memory.default)}",)}
        for k in slots
    )
    return dataclasses.replace(
        interface,
        program=memory.name,
        input_alphabet=tuple(memory.keys),
        token_fields=(dataclasses.replace(key_field, values=key_names),
                      TokenField("value", "onehot", value_names)),
        output_fields=(OutputField("value", value_names),),
        prompt=(*table, {"key": ("input",)}),
        input_other=slots[-1] if memory.default is not None else None,
    )
