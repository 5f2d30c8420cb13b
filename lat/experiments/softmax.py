"""A small softmax-attention transformer trained by Adam: the baseline the paper's automaton
experiment uses (a Llama-style softmax Transformer: Yau et al., arXiv 2410.10101, App. G.2 and G.4,
Fig. 4), here at a CPU size.

It is trained on exactly the (tokens, outputs) sequences Algorithm 1 regresses on — the
recorded rollouts of the compiled program, every position a sample — and judged exactly as
the learned linear model is: a run is exact when the argmax of every output field the run
report reads (the trace field at every answer position, the result field at the last one)
equals the reference. Under teacher forcing on the reference trace this is the same
judgement as an autoregressive rollout: the first wrong decode is where a rollout would
leave the reference, and with none the rollout feeds back exactly the reference tokens.

Model (pre-LayerNorm decoder): a linear embedding of the token vector (no positional
encoding, "NoPE": the causal mask alone orders tokens, and the tokens already carry the
fed-back state, as for the linear model), `layers` blocks of causal softmax self-attention
(`heads` heads) and a GELU MLP (4× width), a final LayerNorm and one linear read-out with a
cross-entropy loss per output field (its one-hot block), averaged over real positions.
float32, Adam (constant lr), gradient-norm clip 1, batches of 32 sequences.

Tuning (`train_tuned`): every learning rate of `LEARNING_RATES` is trained with seed 0 and
scored on a validation split (exact-run fraction, ties by validation loss); the chosen rate
is then trained with the remaining seeds; the result holds every seed's test figure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2)
SEEDS = (0, 1, 2)
BATCH = 32


@dataclass(frozen=True)
class Task:
    """Sequences and how to judge them.

    `fields` are the output fields' widths (blocks of the output vector, in order);
    `judged` per sequence: list of (field index, positions) whose argmax must match.
    """

    tokens: list[np.ndarray]  # (T_i, d)
    outputs: list[np.ndarray]  # (T_i, d_out), one-hot per field
    fields: tuple[int, ...]
    judged: list[list[tuple[int, np.ndarray]]]

    def subset(self, count: int) -> Task:
        return Task(self.tokens[:count], self.outputs[:count], self.fields, self.judged[:count])


def automaton_task(traces, words: Sequence[Sequence[str]]) -> Task:  # noqa: ANN001
    """A Task from recorded automaton traces: the trace field at the last len(word)+1
    positions (states q_0..q_n), the result field at the last position."""
    interface = traces.interface
    names = [f.name for f in interface.output_fields]
    fields = tuple(f.width for f in interface.output_fields)
    trace, result = names.index(interface.trace_field), names.index(interface.result_field)
    judged = []
    for tokens, word in zip(traces.tokens, words, strict=True):
        T = tokens.shape[0]
        judged.append([(trace, np.arange(T - len(word) - 1, T)), (result, np.array([T - 1]))])
    return Task(list(traces.tokens), list(traces.outputs), fields, judged)


class TinyTransformer(nn.Module):
    def __init__(self, d_in: int, d_out: int, width: int = 64, layers: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(nn.ModuleDict({
                "ln1": nn.LayerNorm(width), "qkv": nn.Linear(width, 3 * width),
                "proj": nn.Linear(width, width), "ln2": nn.LayerNorm(width),
                "mlp": nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                     nn.Linear(4 * width, width)),
            }))
        self.ln = nn.LayerNorm(width)
        self.out = nn.Linear(width, d_out)

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        B, T, _ = Z.shape
        x = self.embed(Z)
        for block in self.blocks:
            q, k, v = block["qkv"](block["ln1"](x)).chunk(3, dim=-1)
            split = (B, T, self.heads, -1)
            q, k, v = (t.reshape(split).transpose(1, 2) for t in (q, k, v))
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + block["proj"](a.transpose(1, 2).reshape(B, T, -1))
            x = x + block["mlp"](block["ln2"](x))
        return self.out(self.ln(x))


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _pad(task: Task) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    T = max(t.shape[0] for t in task.tokens)
    n, d = len(task.tokens), task.tokens[0].shape[1]
    Z = torch.zeros(n, T, d)
    labels = torch.full((n, T, len(task.fields)), -100, dtype=torch.long)
    offsets = np.cumsum((0,) + task.fields)
    for i, (tokens, outputs) in enumerate(zip(task.tokens, task.outputs, strict=True)):
        Z[i, :tokens.shape[0]] = torch.from_numpy(tokens.astype(np.float32))
        for f in range(len(task.fields)):
            labels[i, :tokens.shape[0], f] = torch.from_numpy(
                outputs[:, offsets[f]:offsets[f + 1]].argmax(axis=1))
    return Z, labels, torch.from_numpy(offsets)


def _loss(logits: torch.Tensor, labels: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    total = logits.new_zeros(())
    for f in range(labels.shape[2]):
        block = logits[..., int(offsets[f]):int(offsets[f + 1])]
        total = total + nn.functional.cross_entropy(block.reshape(-1, block.shape[-1]),
                                                    labels[..., f].reshape(-1),
                                                    ignore_index=-100)
    return total


def judge(predicted: Sequence[np.ndarray], task: Task) -> list[bool]:
    """Per sequence: is every judged argmax of `predicted` (T_i, d_out) equal to the
    reference's? (Any model's teacher-forced outputs: linear or softmax.)"""
    offsets = np.cumsum((0,) + task.fields)
    verdicts = []
    for y, ref, judged in zip(predicted, task.outputs, task.judged, strict=True):
        ok = True
        for f, pos in judged:
            a, b = offsets[f], offsets[f + 1]
            ok = ok and bool(np.array_equal(np.asarray(y)[pos, a:b].argmax(axis=1),
                                            ref[pos, a:b].argmax(axis=1)))
        verdicts.append(ok)
    return verdicts


@torch.no_grad()
def evaluate(model: nn.Module, task: Task) -> tuple[float, float]:
    """(fraction of exact runs, mean cross-entropy) on `task`."""
    model.eval()
    Z, labels, offsets = _pad(task)
    exact, loss, batches = 0, 0.0, 0
    for start in range(0, Z.shape[0], 256):
        logits = model(Z[start:start + 256])
        lab = labels[start:start + 256]
        loss += float(_loss(logits, lab, offsets))
        batches += 1
        sub = Task(task.tokens[start:start + 256], task.outputs[start:start + 256],
                   task.fields, task.judged[start:start + 256])
        exact += sum(judge([logits[i, :t.shape[0]].numpy() for i, t in enumerate(sub.tokens)],
                           sub))
    model.train()
    return exact / Z.shape[0], loss / batches


def train(task: Task, *, lr: float, seed: int, steps: int, width: int = 64, layers: int = 2,
          heads: int = 4) -> tuple[nn.Module, dict]:
    """Adam on `task` for `steps` steps; returns the model and its training record."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    Z, labels, offsets = _pad(task)
    model = TinyTransformer(Z.shape[2], int(offsets[-1]), width, layers, heads)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = Z.shape[0]
    history = []
    clock = time.perf_counter()
    every = max(1, steps // 20)
    for step in range(steps):
        idx = torch.randint(0, n, (min(BATCH, n),), generator=generator)
        loss = _loss(model(Z[idx]), labels[idx], offsets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % every == 0 or step == steps - 1:
            history.append((time.perf_counter() - clock, float(loss.detach())))
    seconds = time.perf_counter() - clock
    return model, {"lr": lr, "seed": seed, "steps": steps, "seconds": seconds,
                   "final_batch_loss": history[-1][1], "history": history,
                   "converged": converged([h for _, h in history])}


def converged(losses: Sequence[float], floor: float = 1e-3, tol: float = 0.1) -> bool:
    """The loss reached `floor`, or its last quarter improved by less than `tol` relative
    (mean of the last 5 points vs the 5 before the last quarter began)."""
    if not losses:
        return False
    if losses[-1] <= floor:
        return True
    k = max(1, len(losses) // 4)
    late = float(np.mean(losses[-5:]))
    before = float(np.mean(losses[max(0, len(losses) - k - 5):len(losses) - k]))
    return before > 0 and (before - late) / before < tol


def train_tuned(task: Task, validation: Task, tests: dict[str, Task], *, steps: int,
                learning_rates: Sequence[float] = LEARNING_RATES,
                seeds: Sequence[int] = SEEDS, **shape: int) -> dict:
    """Pick the lr on `validation` (seed seeds[0]), train the other seeds at it, score all
    seeds on every test task. Returns a JSON-able record (medians, spreads, per-seed)."""
    grid = []
    best = None
    for lr in learning_rates:
        model, record = train(task, lr=lr, seed=seeds[0], steps=steps, **shape)
        fraction, loss = evaluate(model, validation)
        key = (fraction, -loss if math.isfinite(loss) else -math.inf)
        grid.append({"lr": lr, "validation_exact_fraction": fraction,
                     "validation_loss": loss, "converged": record["converged"],
                     "seconds": record["seconds"]})
        if best is None or key > best[0]:
            best = (key, lr, model, record)
    _, lr, model, record = best
    runs = [(seeds[0], model, record)]
    for seed in seeds[1:]:
        m, r = train(task, lr=lr, seed=seed, steps=steps, **shape)
        runs.append((seed, m, r))
    per_seed = []
    for seed, m, r in runs:
        row = {"seed": seed, "converged": r["converged"], "seconds": r["seconds"],
               "final_batch_loss": r["final_batch_loss"]}
        for name, test in tests.items():
            row[f"{name}_exact_fraction"], row[f"{name}_loss"] = evaluate(m, test)
        per_seed.append(row)
    out = {"lr": lr, "lr_grid": grid, "seeds": list(seeds), "steps": steps,
           "lr_at_grid_edge": lr in (min(learning_rates), max(learning_rates)),
           "parameters": parameters(model), "per_seed": per_seed,
           "converged": all(r["converged"] for r in per_seed)}
    for name in tests:
        values = [r[f"{name}_exact_fraction"] for r in per_seed]
        out[f"{name}_exact_fraction_median"] = float(np.median(values))
        out[f"{name}_exact_fraction_min"] = float(min(values))
        out[f"{name}_exact_fraction_max"] = float(max(values))
    return out
