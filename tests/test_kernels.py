"""Every MHLA form equals the loop-form definition (fp32, relative 1e-5).

Shapes are drawn by Hypothesis with odd T, d and H; chunk and block sizes are drawn too,
so padding, partial blocks and one-chunk blocks are all exercised. Split-and-resume:
prefill a prefix with one form, continue with another == prefill everything.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lat.runtime.device import GraphedDecoder, resolve_device, single_thread
from lat.runtime.forms import (
    KERNELS,
    RecurrentState,
    TokenDecoder,
    choose_kernel,
    fla_inputs,
    mhla,
    mhla_chunked,
    mhla_packed,
    mhla_parallel,
    mhla_recurrent,
    mhla_reference,
    naive_chunked,
    prepare,
    recurrent_step,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_problem(B: int, T: int, d: int, H: int, d_out: int, seed: int,
                   dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(seed)
    Z = torch.randn(B, T, d, generator=generator, dtype=torch.float64).to(dtype)
    V = (torch.randn(H, d_out, d, generator=generator, dtype=torch.float64) / d).to(dtype)
    Q = (torch.randn(H, d, d, generator=generator, dtype=torch.float64) / d).to(dtype)
    return Z, V, Q


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp(min=1.0) if expected.numel() else 1.0
    if expected.numel():
        assert float((actual.double() - expected.double()).abs().max()) <= rel * float(scale)


shapes = st.fixed_dictionaries({
    "B": st.integers(1, 3), "T": st.integers(1, 41), "d": st.integers(1, 9),
    "H": st.integers(1, 3), "d_out": st.integers(1, 6), "seed": st.integers(0, 2**31),
})


@given(shape=shapes, normalise=st.booleans(), chunk=st.integers(1, 9),
       block=st.integers(1, 20))
def test_forms_equal_reference(shape, normalise, chunk, block):
    Z, V, Q = random_problem(**shape)
    expected = mhla_reference(Z, V, Q, 0.5, normalise)
    for form in (mhla_parallel, mhla_recurrent, mhla_chunked):
        assert_close(form(Z, V, Q, 0.5, normalise), expected)
    assert_close(mhla_chunked(Z, V, Q, 0.5, normalise, chunk=chunk, block=block), expected)
    for layout in ("shared", "folded"):
        state = RecurrentState.empty(shape["B"], V, layout=layout)
        assert_close(mhla_recurrent(Z, V, Q, 0.5, normalise, state=state), expected)


def test_reference_matches_closed_form():
    """y_t = Σ_h V_h S_t Q_h z_t with S_t = Σ_{s≤t} z_s z_sᵀ, written independently."""
    Z, V, Q = random_problem(2, 5, 4, 2, 3, seed=7)
    S = torch.cumsum(Z[:, :, :, None] * Z[:, :, None, :], dim=1)
    expected = torch.einsum("hij,btjk,hkl,btl->bti", V, S, Q, Z)
    assert_close(mhla_reference(Z, V, Q), expected)


def test_naive_baseline_equals_reference():
    """The benchmark's hand-written baseline is exact too (a fair comparison)."""
    Z, V, Q = random_problem(2, 150, 7, 3, 5, seed=1)
    assert_close(naive_chunked(Z, V, Q), mhla_reference(Z, V, Q))


@pytest.mark.parametrize("H,d_out,d", [(1, 2, 9), (3, 4, 5), (2, 7, 7)])
def test_both_state_layouts_agree(H, d_out, d):
    Z, V, Q = random_problem(2, 6, d, H, d_out, seed=3)
    default = RecurrentState.empty(2, V, Z.dtype)
    assert default.layout == ("folded" if d_out < d else "shared")
    expected = mhla_reference(Z, V, Q)
    for layout in ("shared", "folded"):
        state = RecurrentState.empty(2, V, Z.dtype, layout=layout)
        assert_close(mhla_recurrent(Z, V, Q, state=state), expected)
    shared = RecurrentState.empty(2, V, Z.dtype, layout="shared")
    mhla_chunked(Z, V, Q, state=shared)
    folded = RecurrentState.empty(2, V, Z.dtype, layout="folded")
    mhla_recurrent(Z, V, Q, state=folded)
    assert_close(shared.folded(V, Q).tensor, folded.tensor)


def test_inactive_rows_keep_their_state():
    Z, V, Q = random_problem(2, 4, 3, 1, 2, seed=5)
    for layout in ("shared", "folded"):
        state = RecurrentState.empty(2, V, Z.dtype, layout=layout)
        active = torch.tensor([True, False])
        for t in range(4):
            recurrent_step(state, Z[:, t], V, Q, active=active)
        only_first = mhla_reference(Z[:1], V, Q)
        fresh = RecurrentState.empty(1, V, Z.dtype, layout=layout)
        for t in range(4):
            y = recurrent_step(fresh, Z[:1, t], V, Q)
        assert_close(y, only_first[:, -1])
        assert torch.count_nonzero(state.tensor[1]) == 0


@given(shape=shapes, split=st.floats(0, 1), layout=st.sampled_from(["shared", "folded"]),
       first=st.sampled_from(["parallel", "chunked", "recurrent"]),
       second=st.sampled_from(["parallel", "chunked", "recurrent"]),
       normalise=st.booleans())
def test_split_and_resume(shape, split, layout, first, second, normalise):
    """Prefill a prefix with one form, continue with another == prefill everything."""
    Z, V, Q = random_problem(**shape)
    T = shape["T"]
    cut = int(split * T)
    expected = mhla_reference(Z, V, Q, 1.5, normalise)
    state = RecurrentState.empty(shape["B"], V, layout=layout)
    head = mhla(Z[:, :cut], V, Q, 1.5, normalise, first, state=state)
    tail = mhla(Z[:, cut:], V, Q, 1.5, normalise, second, state=state)
    assert state.length == T
    assert_close(torch.cat([head, tail], dim=1), expected)


@given(shape=shapes, kernel=st.sampled_from(["parallel", "chunked", "recurrent"]),
       data=st.data())
def test_mixed_lengths_in_one_batch(shape, kernel, data):
    """Right-padded rows with `lengths`: each row equals its own sequence, and the state
    handed on afterwards is exactly each row's own (garbage padding is masked)."""
    Z, V, Q = random_problem(**shape)
    B, T = shape["B"], shape["T"]
    lengths = torch.tensor(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    garbage = Z + 100.0 * (torch.arange(T)[None, :, None] >= lengths[:, None, None])
    state = RecurrentState.empty(B, V, layout="shared")
    Y = mhla(garbage, V, Q, kernel=kernel, lengths=lengths, state=state)
    for row in range(B):
        n = int(lengths[row])
        own = Z[row : row + 1, :n]
        assert_close(Y[row : row + 1, :n], mhla_reference(own, V, Q))
        assert torch.count_nonzero(Y[row, n:]) == 0
        assert_close(state.tensor[row], own[0].T @ own[0])


def test_packed_sequences_with_offsets():
    Z, V, Q = random_problem(1, 60, 5, 3, 4, seed=9)
    offsets = torch.tensor([0, 7, 7, 40, 60])
    packed = mhla_packed(Z[0], offsets, V, Q)
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        assert_close(packed[a:b], mhla_reference(Z[:, a:b], V, Q)[0])


def test_float64_stays_float64():
    """The learner runs the kernels in float64: no silent downcast anywhere."""
    Z, V, Q = random_problem(2, 70, 6, 2, 3, seed=4, dtype=torch.float64)
    expected = mhla_reference(Z, V, Q)
    for kernel in ("parallel", "chunked", "recurrent"):
        Y = mhla(Z, V, Q, kernel=kernel)
        assert Y.dtype == torch.float64
        assert_close(Y, expected, rel=1e-12)


@pytest.mark.parametrize("weights,rel", [("bf16", 4e-2), ("fp16", 5e-3)])
def test_low_precision_weights_keep_an_fp32_state(weights, rel):
    """16-bit matmuls, fp32 state: close to fp32, output in fp32, and the decode
    forms use exactly the rounded weights (they agree with the reference run on them)."""
    Z, V, Q = random_problem(2, 300, 8, 2, 4, seed=2)
    exact = mhla_reference(Z[:, :40], V, Q)
    rounded = mhla(Z[:, :40], V, Q, kernel="reference", weights=weights)
    for kernel in ("parallel", "chunked"):
        Y = mhla(Z[:, :40], V, Q, kernel=kernel, weights=weights)
        assert Y.dtype == torch.float32
        assert_close(Y, exact, rel=rel)
    assert_close(mhla(Z[:, :40], V, Q, kernel="recurrent", weights=weights), rounded)
    long = mhla(Z, V, Q, kernel="chunked", weights=weights)
    assert_close(long, mhla(Z, V, Q, kernel="chunked"), rel=rel)


def sparse_tokens(B: int, T: int, d: int, F: int, seed: int) -> torch.Tensor:
    """Coordinates (B, T, F) of binary tokens: field f owns a disjoint range; d = none."""
    generator = torch.Generator().manual_seed(seed)
    edges = torch.linspace(0, d, F + 1).long()
    columns = []
    for f in range(F):
        low, high = int(edges[f]), int(edges[f + 1])
        column = torch.randint(low, high + 1, (B, T), generator=generator)
        columns.append(torch.where(column == high, d, column))
    return torch.stack(columns, dim=-1)


@pytest.mark.parametrize("Q_kind", ["identity", "sparse", "dense", "identity_heads"])
@pytest.mark.parametrize("F", [1, 2])
def test_token_decoder_equals_reference(Q_kind, F):
    B, T, d, d_out = 3, 17, 9, 4
    H = 2 if Q_kind in ("dense", "identity_heads") else 1
    _, V, Q = random_problem(B, 1, d, H, d_out, seed=6)
    if Q_kind == "identity":
        Q = torch.eye(d)[None]
    elif Q_kind == "identity_heads":
        Q = torch.eye(d)[None].repeat(H, 1, 1) * torch.tensor([1.0, -2.0])[:, None, None]
    elif Q_kind == "sparse":
        Q = torch.zeros(1, d, d)
        Q[0, torch.arange(d), torch.arange(d).flip(0)] = torch.linspace(1, 2, d)
    coords = sparse_tokens(B, T, d, F, seed=1)
    active = torch.rand(B, T, generator=torch.Generator().manual_seed(2)) > 0.3
    decoder = TokenDecoder(V, Q, B, scale=0.5, normalise=True)
    outputs = []
    for t in range(T):
        update = torch.where(active[:, t, None], coords[:, t], d)
        outputs.append(decoder.step(coords[:, t], update))
    dense = torch.zeros(B, T, d + 1).scatter_(2, coords, 1.0)[..., :d]
    state = RecurrentState.empty(B, V)
    expected = [recurrent_step(state, dense[:, t], V, Q, 0.5, True, active[:, t])
                for t in range(T)]
    assert_close(torch.stack(outputs, 1), torch.stack(expected, 1))
    always = TokenDecoder(V, Q, B)
    ys = torch.stack([always.step(coords[:, t]) for t in range(T)], 1)
    assert_close(ys, mhla_reference(dense, V, Q))


@pytest.mark.parametrize("Q_kind", ["identity", "sparse", "dense"])
def test_signed_token_decoder_equals_reference(Q_kind):
    """Codes d+1+c are −e_c (machines' sum-of-deltas tokens): same outputs as the loop."""
    B, T, d, d_out, F = 3, 19, 8, 5, 3
    H = 3 if Q_kind == "dense" else 1
    _, V, Q = random_problem(B, 1, d, H, d_out, seed=11)
    if Q_kind == "identity":
        Q = torch.eye(d)[None]
    elif Q_kind == "sparse":
        Q = torch.zeros(1, d, d)
        Q[0, torch.arange(d), torch.arange(d).flip(0)] = torch.linspace(1, 2, d)
    generator = torch.Generator().manual_seed(4)
    coords = torch.randint(0, 2 * (d + 1), (B, T, F), generator=generator)
    active = torch.rand(B, T, generator=generator) > 0.25
    signs = torch.where(coords > d, -1.0, 1.0)
    rows = torch.where(coords > d, coords - (d + 1), coords)
    dense = torch.zeros(B, T, d + 1).scatter_add_(2, rows, signs)[..., :d]
    decoder = TokenDecoder(V, Q, B, signed=True)
    outputs = []
    for t in range(T):
        update = torch.where(active[:, t, None], coords[:, t], d)
        outputs.append(decoder.step(coords[:, t], update))
    state = RecurrentState.empty(B, V)
    expected = [recurrent_step(state, dense[:, t], V, Q, 1.0, False, active[:, t])
                for t in range(T)]
    assert_close(torch.stack(outputs, 1), torch.stack(expected, 1))


def test_token_decoder_resumes_a_prefill():
    _, V, Q = random_problem(2, 1, 7, 2, 3, seed=8)
    coords = sparse_tokens(2, 30, 7, 2, seed=3)
    dense = torch.zeros(2, 30, 8).scatter_(2, coords, 1.0)[..., :7]
    state = RecurrentState.empty(2, V, layout="shared")
    head = mhla(dense[:, :20], V, Q, kernel="chunked", state=state)
    decoder = TokenDecoder(V, Q, 2)
    decoder.load_shared(state.tensor, state.length, V, Q, "fp32")
    tail = torch.stack([decoder.step(coords[:, t]) for t in range(20, 30)], 1)
    assert_close(torch.cat([head, tail], 1), mhla_reference(dense, V, Q))


def test_kernel_choice_and_errors():
    assert choose_kernel(8) == "parallel" and choose_kernel(4096) == "chunked"
    assert set(KERNELS) >= {"auto", "reference", "parallel", "chunked", "recurrent", "fla"}
    Z, V, Q = random_problem(1, 0, 3, 1, 2, seed=0)
    for kernel in ("parallel", "chunked", "recurrent", "reference", "auto"):
        assert mhla(Z, V, Q, kernel=kernel).shape == (1, 0, 2)
    with pytest.raises(ValueError, match="unknown kernel"):
        mhla(Z, V, Q, kernel="magic")
    with pytest.raises(ValueError, match="unknown weight format"):
        mhla(Z, V, Q, kernel="chunked", weights="fp8")
    with pytest.raises(ValueError, match="unknown state layout"):
        RecurrentState.empty(1, V, layout="diagonal")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_single_thread_restores_the_setting():
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_request_without_a_gpu_is_one_line():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")


@needs_cuda
def test_cuda_forms_equal_reference():
    Z, V, Q = random_problem(2, 200, 16, 3, 8, seed=12)
    expected = mhla_reference(Z[:, :50], V, Q)
    for kernel in ("parallel", "chunked", "recurrent"):
        Y = mhla(Z[:, :50].cuda(), V.cuda(), Q.cuda(), kernel=kernel)
        assert_close(Y.cpu(), expected)
    state = RecurrentState.empty(2, V, device="cuda", layout="shared")
    head = mhla(Z[:, :120].cuda(), V.cuda(), Q.cuda(), kernel="chunked", state=state)
    tail = mhla(Z[:, 120:].cuda(), V.cuda(), Q.cuda(), kernel="recurrent", state=state)
    assert_close(torch.cat([head, tail], 1).cpu(), mhla_chunked(Z, V, Q))


@needs_cuda
@pytest.mark.parametrize("layout", ["shared", "folded"])
def test_cuda_graph_decoder_equals_eager(layout):
    Z, V, Q = random_problem(1, 40, 16, 2, 8, seed=13)
    state = RecurrentState.empty(1, V, device="cuda", layout=layout)
    graphed = GraphedDecoder(V.cuda(), Q.cuda(), state, normalise=True)
    ys = torch.stack([graphed.step(Z[:, t].cuda()).clone() for t in range(40)], 1)
    assert_close(ys.cpu(), mhla_reference(Z, V, Q, normalise=True))


@needs_cuda
def test_fla_kernel_when_installed():
    from lat.runtime.forms import fla_available

    if not fla_available():
        pytest.skip("flash-linear-attention is not installed")
    Z, V, Q = random_problem(2, 256, 32, 4, 16, seed=14)
    expected = mhla_chunked(Z, V, Q, weights="bf16")
    Y = mhla(Z.cuda(), V.cuda(), Q.cuda(), kernel="fla", weights="bf16")
    assert_close(Y.cpu(), expected, rel=4e-2)
    state = RecurrentState.empty(2, V, device="cuda", layout="shared")
    mhla(Z[:, :100].cuda(), V.cuda(), Q.cuda(), kernel="fla", weights="bf16", state=state)
    tail = mhla(Z[:, 100:].cuda(), V.cuda(), Q.cuda(), kernel="fla", weights="bf16",
                state=state)
    assert_close(tail.cpu(), expected[:, 100:], rel=4e-2)


def fla_naive():
    """fla's pure-torch simple-GLA references, or a skip (fla absent or unimportable)."""
    try:
        from fla.ops.simple_gla import naive
    except Exception as error:  # ImportError, or Triton refusing at import
        pytest.skip(f"flash-linear-attention does not import here ({type(error).__name__})")
    if not hasattr(naive, "naive_recurrent_simple_gla"):
        pytest.skip("this fla release has no naive_recurrent_simple_gla")
    return naive


def test_fla_adapter_on_fla_naive_reference():
    """The adapter's mapping onto fla's simple GLA, checked on the CPU: per head q = Q_h z,
    k = z, v = V_h z, no gate, scale 1, h0 = S V_hᵀ from a shared state S; fla's own
    pure-torch reference then gives Σ_h o^h = y, and its final state is (S + ZᵀZ) V_hᵀ."""
    naive = fla_naive()
    B, T, split, d, H, d_out = 2, 37, 20, 7, 3, 5
    Z, V, Q = random_problem(B, T, d, H, d_out, seed=15)
    expected = mhla_reference(Z, V, Q)
    state = RecurrentState.empty(B, V, layout="shared")
    mhla_chunked(Z[:, :split], V, Q, state=state)
    p = prepare(V, Q, "fp32")
    inputs = fla_inputs(Z[:, split:], p, state.tensor)
    assert inputs["g"] is None and inputs["scale"] == 1.0
    assert fla_inputs(Z, p)["initial_state"] is None
    gate = torch.zeros(B, T - split, H)  # log-decay 0: fla's form of g=None
    runs = {"recurrent": naive.naive_recurrent_simple_gla(**{**inputs, "g": gate},
                                                          output_final_state=True)}
    if hasattr(naive, "naive_chunk_simple_gla"):  # the chunk kernel's own reference
        runs["chunk"] = naive.naive_chunk_simple_gla(**{**inputs, "g": gate},
                                                     output_final_state=True, chunk_size=16)
    full = state.tensor + torch.einsum("btd,bte->bde", Z[:, split:], Z[:, split:])
    final = fla_inputs(Z[:, :0], p, full)["initial_state"]
    for o, h in runs.values():
        assert o.shape == (B, T - split, H, d_out)
        assert_close(o.sum(dim=2), expected[:, split:])
        assert_close(h, final)


def test_forms_registry_and_files():
    """One form per file behind a {name: function} registry; imports inside the package
    point one way (no circle) and name no private (`_name`) helper of another file."""
    import ast
    from pathlib import Path

    from lat.runtime import forms

    assert KERNELS[0] == "auto" and KERNELS[1:] == tuple(forms.FORMS)
    assert forms.FORMS["chunked"] is mhla_chunked and forms.FORMS["fla"] is forms.mhla_fla
    package = Path(forms.__file__).parent
    edges: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 500, path.name
        edges[path.stem] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "lat.runtime.forms."):
                edges[path.stem].add(node.module.rsplit(".", 1)[1])
                assert not [a.name for a in node.names if a.name.startswith("_")], path.name

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n}))
                   for n in edges.get(start, ()))

    assert not [m for m in edges if reaches(m, m, set())]
