"""Where a training step runs and in which precision: autocast context, gradient scaler, memory format.

CUDA gets bf16/fp16 autocast (``trainer.precision``), a gradient scaler for fp16 and optionally channels-last
images; on CPU every helper here is the identity (fp32, no scaling, contiguous tensors), which is what lets a
resumed CPU run continue bit for bit.
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast", "grad_scaler", "memory_format", "precision_of"]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of one forward pass.

    Args:
        device: where the forward runs.
        precision: ``fp32`` | ``bf16`` | ``fp16``.

    Returns:
        ``torch.autocast("cuda", dtype=bfloat16 | float16)`` on CUDA for bf16/fp16; a no-op context on CPU or for
        fp32.
    """
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 on CUDA (bf16 and fp32 need none; disabled it passes through).

    Args:
        device: where the backward runs.
        precision: ``fp32`` | ``bf16`` | ``fp16``.
    """
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "fp16")


def precision_of(amp_dtype) -> str:
    """The precision name of an autocast dtype: ``torch.float16`` -> ``fp16``, ``torch.bfloat16`` -> ``bf16``,
    anything else (None, float32) -> ``fp32``."""
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(amp_dtype, "fp32")


def memory_format(device: torch.device, channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` on CUDA when asked for (``trainer.channels_last``), else ``torch.contiguous_format``."""
    return torch.channels_last if device.type == "cuda" and channels_last else torch.contiguous_format
