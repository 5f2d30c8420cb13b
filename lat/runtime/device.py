"""Where a run executes: device choice, CPU thread policy, and CUDA-graph decode.

`resolve_device("auto")` is CUDA when torch sees a GPU, else the CPU.

Small ops and threads. A decode step is a handful of tiny kernels; on a CPU, spreading
each over an OpenMP team costs more than the arithmetic (and far more when a core is
shared: a team waits for its slowest thread at every barrier). `single_thread()` runs a
step loop on one thread and restores the setting afterwards.

CUDA graphs. On a GPU a decode step is launch-bound: ~5 kernels of microseconds each.
`GraphedDecoder` captures one step (state update + output, normalise included) into a
`torch.cuda.CUDAGraph` and replays it, so a token costs one graph launch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from lat.runtime.errors import ResourceError
from lat.runtime.forms import Prepared, RecurrentState, dense_step, format_name, prepare

DEVICES = ("auto", "cpu", "cuda")


class DeviceUnavailable(ResourceError, RuntimeError):
    """A device that this machine does not have (e.g. CUDA without a GPU): one line.

    A `RuntimeError` too, as it was before it had a type of its own."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" → cuda if available else cpu; "cuda" without a GPU is `DeviceUnavailable`.

    A name that is no device at all is a `ValueError` (the command line offers only
    `DEVICES`, so from there it cannot happen)."""
    if isinstance(device, torch.device):
        return device
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise ValueError(f"unknown device '{device}' (choose from {', '.join(DEVICES)})")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable("--device cuda: torch sees no CUDA device on this machine")
    return torch.device(device)


@contextlib.contextmanager
def single_thread(enabled: bool = True) -> Iterator[None]:
    """Run the body with one intra-op thread (CPU step loops); restore afterwards."""
    if not enabled:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (timing); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GraphedDecoder:
    """A dense decode step captured once as a CUDA graph and replayed per token.

    `step(z)` copies z into a static input buffer, replays, and returns the static
    output buffer (valid until the next step). The state lives in `state.tensor`,
    updated in place by the graph. CUDA only.
    """

    def __init__(self, V: torch.Tensor, Q: torch.Tensor, state: RecurrentState,
                 *, weights: str | None = None, scale: float = 1.0,
                 normalise: bool = False) -> None:
        device = state.tensor.device
        if device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA state")
        p: Prepared = prepare(V.to(device), Q.to(device),
                              weights or format_name(state.tensor.dtype))
        self.state = state
        B, d = state.tensor.shape[0], p.d
        self.z = torch.zeros(B, d, dtype=p.state, device=device)
        self.length = torch.full((), float(state.length), dtype=p.state, device=device)

        def body() -> torch.Tensor:
            y = dense_step(p, state.layout, state.tensor, self.z, self.z)
            self.length.add_(1.0)
            if scale != 1.0:
                y = y * scale
            if normalise:
                y = y / self.length
            return y

        saved = state.tensor.clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm up (allocator, cuBLAS handles) off-graph
            for _ in range(3):
                body()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.y = body()
        state.tensor.copy_(saved)  # undo the warm-up steps (capture itself runs nothing)
        self.length.fill_(float(state.length))

    def step(self, z: torch.Tensor) -> torch.Tensor:
        self.z.copy_(z, non_blocking=True)
        self.graph.replay()
        self.state.length += 1
        return self.y
