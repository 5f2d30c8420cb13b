"""`lat bench` smoke test: every key of the JSON object, at a tiny shape (no timing
assertions: timing belongs in benchmarks/, not in tests)."""

from __future__ import annotations

import json
import math

from lat.bench import naive_flops, prefill_flops, run_bench, summary_rows

KEYS = (
    "gemm_gflops", "small_gemm_gflops", "prefill_tokens_per_s", "prefill_flops_per_token",
    "prefill_fraction_of_gemm_peak", "prefill_fraction_of_small_gemm",
    "speedup_vs_reference_loop", "speedup_vs_naive_chunked", "prefill_tokens_per_s_bf16",
    "decode_us_per_token", "rollout_symbols_per_s", "machine_us_per_step",
    "long_input_symbols_per_s", "device", "B", "T", "H", "d",
)


def test_bench_reports_every_figure():
    result = run_bench(quick=True, device="cpu", shape={"B": 2, "T": 48, "H": 2, "d": 8})
    json.dumps(result)  # serialisable as printed by --json
    for key in KEYS:
        assert key in result, key
    for key in KEYS[:13]:
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key])
        assert result[key] > 0, key
    assert (result["B"], result["T"], result["H"], result["d"]) == (2, 48, 2, 8)
    assert result["device"] == "cpu" and result["machine"]["cores"]
    assert result["prefill_flops_per_token"] == prefill_flops(2, 8, 8, result["chunk"])
    assert dict(summary_rows(result))["device"] == "cpu"
    # learner figures: Gram vs fp64 GEMM in the same run; --quick relearns a 20x4 automaton
    for key in ("learner_gram_gflops", "learner_gemm_fp64_gflops",
                "learner_gram_fraction_of_gemm_peak", "learn_20x4_seconds"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert "learn_64x4_seconds" not in result  # only without --quick
    assert result["learn_20x4_equivalent"] is True


def test_flop_formulas():
    """The README's formulas at the default shape."""
    assert prefill_flops(8, 64, 64, 16) == 237_568
    assert naive_flops(8, 64, 64, 64) == 393_216
