"""Numeric precision of the forward pass, one name for training (``solver.precision``) and inference
(``Predictor(..., precision=...)``).

* ``fp32``: no autocast.
* ``amp_fp16``: ``torch.autocast(float16)`` on CUDA, with a GradScaler in training (fp16's range is
  too small for raw gradients); on the CPU it runs in fp32, so a CUDA config also runs on a laptop.
* ``bf16``: ``torch.autocast(bfloat16)`` on the CPU and on CUDA; no GradScaler (bfloat16 has
  float32's exponent range).

The model keeps its weights in float32 either way; the box regression, the SRM ranking and the stuff
labels are computed in float32 under autocast (docs/model.md, "Mixed precision").
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Optional

import torch

from oanet.errors import ConfigError

PRECISIONS = ("fp32", "amp_fp16", "bf16")


def autocast_dtype(precision: str, device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype of ``precision`` on ``device_type`` (``"cpu"``, ``"cuda"``); None = fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return torch.bfloat16
    if precision == "amp_fp16" and device_type == "cuda":
        return torch.float16
    return None


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` when it can run on ``device``, else a ConfigError saying what to use instead."""
    dtype = autocast_dtype(precision, device.type)
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; use amp_fp16"
        )
    return precision


def autocast(precision: str, device_type: str) -> ContextManager:
    """The autocast context of ``precision`` (a null context for fp32)."""
    dtype = autocast_dtype(precision, device_type)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


def uses_grad_scaler(precision: str, device_type: str) -> bool:
    """Whether training needs a GradScaler: float16 autocast only."""
    return autocast_dtype(precision, device_type) is torch.float16
