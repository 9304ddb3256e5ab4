"""The one optimiser and learning-rate factory of every training loop in pand.

* :func:`build_optimizer`: SGD (with momentum) or AdamW over the trainable parameters, from a config section's
  ``optimizer``, ``lr``, ``momentum`` and ``weight_decay``.
* :func:`build_scheduler`: a per-epoch ``torch.optim.lr_scheduler`` (cosine | step | none, optional linear
  warm-up); its state is checkpointed with the optimiser (Stage NSD).
* :func:`cosine_lr` + :func:`set_lr`: a closed-form learning rate (constant warm-up, then cosine) written into the
  optimiser before an epoch; nothing to checkpoint, a resumed run recomputes it from the epoch (Stage PSC, the
  CoOp recipe; with ``cosine_epochs=epochs`` it is Dassl's schedule of PromptKD).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import torch

from pand.errors import PandError

from .optim_table import OPTIMIZERS, SCHEDULERS  # the names this factory builds (torch-free)

__all__ = ["OPTIMIZERS", "SCHEDULERS", "WARMUP_LR", "build_optimizer", "build_scheduler", "cosine_lr", "set_lr"]

WARMUP_LR = 1e-5  # CoOp's (and Dassl's) constant warm-up learning rate


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, setting: str = "optimizer") -> torch.optim.Optimizer:
    """SGD or AdamW over the parameters of ``params`` that require a gradient (order kept).

    Args:
        params: parameters (e.g. ``model.parameters()``); frozen ones are dropped.
        name: ``sgd`` (``torch.optim.SGD`` with ``momentum``) or ``adamw`` (``torch.optim.AdamW``, default betas).
        lr: base learning rate.
        weight_decay: L2 (SGD) or decoupled (AdamW) weight decay.
        momentum: SGD momentum (unused by AdamW).
        setting: the config key of ``name``, named in the error (e.g. ``nsd.optimizer``).

    Raises:
        PandError: an unknown ``name``.
    """
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=float(lr), weight_decay=float(weight_decay))
    raise PandError(f"{setting} must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: int, warmup_epochs: int = 0,
                    eta_min: float = 0.0, step_size: int = 30, gamma: float = 0.1, setting: str = "scheduler") -> Any:
    """A per-epoch LR scheduler (call ``.step()`` once after every epoch).

    * ``cosine``: ``CosineAnnealingLR`` from the base LR to ``eta_min`` over ``epochs - warmup_epochs`` epochs;
    * ``step``: ``StepLR``, the LR times ``gamma`` every ``step_size`` epochs;
    * ``none``: constant.

    With ``warmup_epochs = W > 0`` a ``LinearLR`` ramp from ``base / (W + 1)`` to the base LR runs first
    (``SequentialLR`` with the milestone at ``W``).

    Raises:
        PandError: an unknown ``name``.
    """
    warm = int(warmup_epochs)
    main_epochs = max(1, int(epochs) - warm)
    if name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=main_epochs, eta_min=eta_min)
    elif name == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    elif name == "none":
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    else:
        raise PandError(f"{setting} must be one of {', '.join(SCHEDULERS)}, got {name!r}")
    if warm > 0:
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warm + 1), total_iters=warm)
        sched = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, sched], milestones=[warm])
    return sched


def cosine_lr(epoch: int, base_lr: float, epochs: int, warmup_epochs: int = 0, warmup_lr: float = WARMUP_LR,
              cosine_epochs: Optional[int] = None) -> float:
    """Learning rate of (0-based) ``epoch``: constant ``warmup_lr`` for the first ``W = warmup_epochs``, then

        lr = base_lr * (1 + cos(pi * t / T)) / 2,   t = min(epoch - W, T),

    with ``T = cosine_epochs`` (default ``epochs - W``: CoOp, the cosine would reach 0 one epoch after the last;
    ``cosine_epochs=epochs`` is Dassl's variant, PromptKD's). ``T`` is at least 1; past ``W + T`` the LR stays 0.
    """
    if epoch < warmup_epochs:
        return float(warmup_lr)
    T = max(1, int(epochs) - int(warmup_epochs) if cosine_epochs is None else int(cosine_epochs))
    t = min(epoch - int(warmup_epochs), T)
    return float(base_lr) * 0.5 * (1.0 + math.cos(math.pi * t / T))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    """Write ``lr`` into every parameter group of ``optimizer``; returns ``lr``."""
    for g in optimizer.param_groups:
        g["lr"] = lr
    return lr
