"""Multi-head linear attention (MHLA) in its several computational forms, one file each.

    y_t = scale · Σ_h V_h Σ_{s≤t} z_s (z_sᵀ Q_h z_t)        (÷ t when normalise)

Shapes: tokens Z (B, T, d); V (H, d_out, d); Q (H, d, d); outputs (B, T, d_out).

The files, laid out as flash-linear-attention lays out its ops:

- `reference.py`  the definition as loops (`mhla_reference`), the hand-written naive
                  chunked baseline `lat bench` measures against (`naive_chunked`) and
                  `mhla_masked`, the differentiable form (training, float64 checks);
- `chunked.py`    `mhla_parallel` (one masked T×T block) and `mhla_chunked` (prefill);
- `recurrent.py`  `mhla_recurrent`, one token at a time through a `RecurrentState`;
- `packed.py`     `mhla_packed`, variable-length sequences on one token axis;
- `fla.py`        `mhla_fla`, flash-linear-attention's Triton chunk kernel (CUDA);
- `decoder.py`    `TokenDecoder`, decode of binary tokens by their coordinates;
- `layouts.py`    number formats, prepared weights, the recurrent state's layouts;
- `dispatch.py`   the {name: function} registry `FORMS`, `choose_kernel` and `mhla`.

Every fast form is tested against `mhla_reference` (fp32, relative 1e-5). Imports point
one way: layouts ← the forms ← dispatch ← packed; this file only re-exports.
"""

from lat.runtime.forms.chunked import choose_block, choose_chunk, mhla_chunked, mhla_parallel
from lat.runtime.forms.decoder import TokenDecoder
from lat.runtime.forms.dispatch import FORMS, KERNELS, choose_kernel, mhla, use_fla
from lat.runtime.forms.fla import fla_available, fla_inputs, mhla_fla
from lat.runtime.forms.layouts import (
    FORMATS,
    LAYOUTS,
    Prepared,
    RecurrentState,
    fold,
    format_name,
    prepare,
    state_dtype,
    weight_dtype,
)
from lat.runtime.forms.packed import mhla_packed
from lat.runtime.forms.recurrent import dense_step, mhla_recurrent, recurrent_step, step_prepared
from lat.runtime.forms.reference import (
    mhla_masked,
    mhla_reference,
    naive_chunked,
    reference_form,
)

__all__ = [
    "FORMATS", "FORMS", "KERNELS", "LAYOUTS", "Prepared", "RecurrentState", "TokenDecoder",
    "choose_block", "choose_chunk", "choose_kernel", "dense_step", "fla_available",
    "fla_inputs", "fold", "format_name", "mhla", "mhla_chunked", "mhla_fla", "mhla_masked",
    "mhla_packed", "mhla_parallel", "mhla_recurrent", "mhla_reference", "naive_chunked", "prepare",
    "recurrent_step", "reference_form", "state_dtype", "step_prepared", "use_fla",
    "weight_dtype",
]
