"""One optimisation step, and what happens to a step whose loss is not finite.

:func:`optimizer_step` is the whole update after the forward pass::

    zero_grad -> backward (through the gradient scaler when one is given) -> [unscale, clip the global grad norm]
              -> optimizer.step (skipped by the scaler on inf/NaN gradients) -> scaler.update

:func:`nonfinite_step` is the one policy for a NaN/inf loss: stop with the stage's error (the default, nothing of
the step applied), or, with ``trainer.skip_nonfinite_steps=true``, drop the step's gradients, warn and go on.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Optional

import torch
from torch import nn

from pand.errors import PandError

__all__ = ["optimizer_step", "nonfinite_step"]


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler] = None,
                   clip: float = 0.0, params: Optional[Iterable[torch.Tensor]] = None) -> None:
    """Apply one update from ``loss``.

    Args:
        loss: the scalar loss of the batch (its graph reaches the optimised parameters).
        optimizer: the optimiser (its gradients are reset first, ``set_to_none=True``).
        scaler: a ``torch.amp.GradScaler`` (fp16 on CUDA; a disabled one passes through) or None (plain backward).
        clip: when ``> 0``, clip the global L2 norm of the gradients of ``params`` to ``clip`` (after unscaling).
        params: the parameters whose gradients are clipped (required when ``clip > 0``).
    """
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, clip)
    scaler.step(optimizer)
    scaler.update()


def nonfinite_step(error: PandError, skip: bool, optimizer: torch.optim.Optimizer, warn: bool = True) -> None:
    """Handle a step whose loss is NaN/inf, before anything of it was applied.

    Args:
        error: the stage's error naming the step (its text up to ``". The step"`` is the warning's subject).
        skip: ``trainer.skip_nonfinite_steps``: False raises ``error``; True drops the step's gradients and warns
            ``step skipped (trainer.skip_nonfinite_steps=true): <subject>``.
        optimizer: whose gradients are dropped.
        warn: False silences the warning (non-main ranks of a distributed run).

    Raises:
        PandError: ``error`` itself, unless ``skip``.
    """
    if not skip:
        raise error
    if warn:
        warnings.warn(f"step skipped (trainer.skip_nonfinite_steps=true): {str(error).split('. The step')[0]}")
    optimizer.zero_grad(set_to_none=True)
