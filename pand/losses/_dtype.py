"""dtype helper shared by the loss functions."""
from __future__ import annotations

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (AMP outputs) are promoted to float32; float32/float64 are returned as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
