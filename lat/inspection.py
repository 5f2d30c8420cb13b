"""Describe models and record their runs: what `lat compile`, `lat inspect`, `lat trace` and
`lat learn` report, callable from Python (docs/ARCHITECTURE.md, "The face").

Every function returns plain data (dicts of JSON-ready values, a small dataclass, rows of
text) or writes one file; printing is the command line's business. The module is not named
`inspect` so that it can never shadow the standard library's module of that name when a
file inside `lat/` is run as a script.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lat.api import check_steps
from lat.learner.traces import record_traces, sample_words, save_traces
from lat.runtime.model import CompiledModel


def model_summary(model: CompiledModel) -> dict[str, object]:
    """H, d, d_out, parameters, margin and digest: what every compile and inspect reports,
    plus what a learned model's certificate covers (`certificate_summary`)."""
    return {
        "program": model.interface.program,
        "kind": model.interface.kind,
        "origin": model.info.get("origin", "unknown"),
        "heads": model.heads,
        "d": model.d,
        "d_out": model.d_out,
        "parameters": model.parameters,
        "dtype": str(model.V.dtype).replace("torch.", ""),
        "decode_margin": model.info.get("decode_margin"),
        "sha256": model.sha256(),
        **certificate_summary(model),
    }


def certificate_summary(model: CompiledModel) -> dict[str, object]:
    """What a learned artifact's certificate covers, in words; empty for a compiled model
    (whose correctness is the compiler's, checked by `lat verify`)."""
    certified = model.info.get("certified")
    if model.info.get("origin") != "learned" or not isinstance(certified, dict):
        return {}
    equivalence = model.info.get("equivalence") or {}
    return {
        "certificate": f"{certified.get('scope')}: {certified.get('domain')}",
        "equivalence": str(equivalence.get("statement", "")),
        "certified": bool(certified.get("proven")),
        **({} if certified.get("proven") else {"not certified because": certified.get("reason")}),
    }


def artifact_summary(model: CompiledModel) -> dict[str, object]:
    """`model_summary` plus the interface (vocabulary, fields, feedback) as JSON data."""
    return {**model_summary(model), "interface": json.loads(model.interface.to_json())}


def context_sizes(bound: CompiledModel) -> dict[str, object]:
    """Prompt length and tokens per simulated step of a bound context-placement model."""
    per_step = int(bound.interface.extra.get("tokens_per_step", 1))
    prompt = len(bound.interface.prompt)
    return {"prompt_tokens": prompt, "tokens_per_step": per_step,
            "tokens_for_t_steps": f"c(t) = {prompt} + {per_step}·t"}


MAX_HEATMAP_ENTRIES = 4_000_000  # above this (or for sparse weights) only nonzeros are drawn


def _nonzeros(tensor: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and value of each nonzero of a 2-D tensor, sparse or dense."""
    if tensor.layout == torch.sparse_coo:
        tensor = tensor.coalesce()
        rows, cols = tensor.indices().numpy()
        return rows, cols, tensor.values().double().numpy()
    rows, cols = torch.nonzero(tensor, as_tuple=True)
    return rows.numpy(), cols.numpy(), tensor[rows, cols].double().numpy()


def plot_weights(model: CompiledModel, path: str | Path, max_heads: int = 4) -> Path:
    """Heatmaps of V_h and Q_h for the first `max_heads` heads, written as a PNG at `path`
    (for sparse or very large weights, a scatter of their nonzero entries)."""
    import matplotlib  # only here: describing a model without a plot never loads it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = min(model.heads, max_heads)
    figure, axes = plt.subplots(heads, 2, figsize=(9, 3.6 * heads), squeeze=False)
    for h in range(heads):
        for column, (name, tensor) in enumerate((("V", model.V[h]), ("Q", model.Q[h]))):
            axis = axes[h][column]
            if tensor.layout == torch.sparse_coo or tensor.numel() > MAX_HEATMAP_ENTRIES:
                # a heatmap of a big one-hot table is one colour: draw its nonzeros instead
                rows, cols, values = _nonzeros(tensor)
                image = axis.scatter(cols, rows, c=values, cmap="RdBu_r", s=1, marker="s")
                axis.set_xlim(-0.5, tensor.shape[1] - 0.5)
                axis.set_ylim(tensor.shape[0] - 0.5, -0.5)
            else:
                image = axis.imshow(tensor.double().numpy(), cmap="RdBu_r", aspect="auto",
                                    interpolation="nearest")
            axis.set_title(f"{name}_{h}  ({tuple(tensor.shape)[0]}×{tuple(tensor.shape)[1]})")
            axis.set_xlabel("token coordinate")
            axis.set_ylabel("output coordinate" if name == "V" else "token coordinate")
            figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle(f"{model.interface.program}: H={model.heads}, d={model.d}, "
                    f"d_out={model.d_out}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


@dataclass(frozen=True)
class TraceRecording:
    """What `record_trace_file` wrote: how many rollouts, how many (context, output) pairs
    they hold, and where."""

    rollouts: int
    pairs: int
    path: str

    def to_json(self) -> dict[str, object]:
        """The `lat trace --json` report (its keys predate this class)."""
        return {"traces": self.rollouts, "samples": self.pairs, "file": self.path}


def record_trace_file(
    model: CompiledModel,
    path: str | Path,
    *,
    samples: int = 1000,
    max_len: int = 64,
    seed: int = 0,
    max_steps: int | None = None,
) -> TraceRecording:
    """Roll the model out on `samples` random words of length ≤ `max_len` and save the
    traces at `path` (the file `lat learn --traces` reads).

    `max_steps` refuses, before any run, a model whose longest run could exceed it."""
    check_steps(model, max_len, max_steps)
    words = sample_words(model.interface, samples, max_len, np.random.default_rng(seed))
    traces = record_traces(model, words)
    save_traces(traces, path)
    return TraceRecording(rollouts=len(words), pairs=sum(len(t) for t in traces.tokens),
                          path=str(path))


def learn_summary(report: dict) -> list[tuple[str, str]]:
    """The rows `lat learn` prints, as (figure, value) text, from a learn report's JSON
    (`LearnResult.to_json()`): sizes, heads, the certificate's scope and figures, the
    equivalence verdict and its evidence, and the data design when there was one."""
    certificate = report["certificate"]
    rows = [(key, _figure(report[key])) for key in ("samples", "traces", "train_max_abs_error")]
    before = report.get("heads_before_minimising")
    rows.append(("heads", str(report["heads"]) if before in (None, report["heads"])
                 else f"{report['heads']} (Algorithm 1: {before})"))
    search = report.get("head_search") or {}
    gauge = search.get("gauge")
    if gauge and gauge.get("heads") is not None:
        rows.append(("sparse gauge", f"{gauge['heads']} heads, "
                     + ("complete" if gauge["complete"] else "cut short by its deadline")
                     + f"; {gauge['pattern']}" + ("" if search.get("kept") == "gauge"
                                                 else f" (kept: {search.get('kept')})")))
    rows.append(("scope", f"{certificate['scope']}: {certificate['domain']}"))
    if certificate.get("domain_dimension") is not None:
        rows.append(("domain dimension", str(certificate["domain_dimension"])))
    rows += [(f"certificate.{key}", _figure(value)) for key, value in certificate.items()
             if key not in ("scope", "domain", "domain_dimension", "notes")]
    equivalence = report.get("equivalence") or {}
    if report["equivalent"] is None:
        rows.append(("reproduces traces", f"{report['reproduces_traces']} "
                     f"({report['checked']} recorded runs)"))
    else:
        rows.append(("equivalent", f"{report['equivalent']} ({equivalence.get('method')}; "
                     f"{report['checked']} inputs run side by side)"))
    rows.append(("evidence", str(equivalence.get("statement", ""))))
    if report.get("design") in ("qr", "exact"):
        rows.append(("design", f"{report['traces']} {report['design']}-designed traces"))
    comparison = report.get("design_comparison")
    if comparison:
        needed = (comparison["random_traces"] if comparison["random_covered"]
                  else f"not covered by {comparison['max_random']}")
        rows.append(("random traces to cover", f"{needed} (same domain, "
                     f"{comparison['domain_sequences']} words)"))
    return rows


def _figure(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
