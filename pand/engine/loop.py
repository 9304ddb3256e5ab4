"""The epoch loop and the evaluation of every training stage (the shape of torchvision's reference scripts).

:func:`train_one_epoch` walks the batches of one epoch and calls the stage's ``step`` on each; the stage computes
its loss and updates (with :func:`pand.engine.step.optimizer_step`) and returns what it wants summed. The loop
keeps the counts (applied steps, skipped non-finite steps, images, seconds) and calls ``on_step`` after every
step, e.g. for logging or a test's interruption hook.

:func:`evaluate` measures a classifier on a loader: top-1, top-5 and mean cross-entropy over the exact split,
summed across ranks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from pand.utils.distributed import DistInfo, all_reduce_sum

from .device import autocast, memory_format

__all__ = ["EpochTotals", "StepFn", "OnStep", "train_one_epoch", "evaluate"]

# step(step index within the epoch, batch) -> (values to sum, images in the batch), or None when the step was skipped
StepFn = Callable[[int, Any], Optional[Tuple[Mapping[str, Any], int]]]


@dataclass
class EpochTotals:
    """Running totals of one epoch (what :func:`train_one_epoch` returns).

    Attributes:
        sums: per key, the sum over applied steps of the values the step returned.
        steps: applied steps.
        skipped: steps skipped (the step returned None: a non-finite loss under ``trainer.skip_nonfinite_steps``).
        images: images of the applied steps (as counted by the step).
        start: ``time.perf_counter()`` at the start of the epoch.
        seconds: wall time of the epoch (set at its end).
    """

    sums: Dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    skipped: int = 0
    images: int = 0
    start: float = 0.0
    seconds: float = 0.0

    def means(self) -> Dict[str, float]:
        """``sums[k] / steps`` (per-step means; ``steps`` taken as 1 when no step was applied)."""
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}


# on_step(step index, values of the step (None: skipped), running totals)
OnStep = Callable[[int, Optional[Mapping[str, Any]], EpochTotals], None]


def train_one_epoch(batches: Iterable, step: StepFn, on_step: Optional[OnStep] = None) -> EpochTotals:
    """Run ``step`` on every batch of one epoch and sum what it returns.

    Args:
        batches: the epoch's batches (a DataLoader, a tqdm bar over one, or any iterable).
        step: ``step(i, batch) -> (values, n_images)`` after applying the update of batch ``i``; ``values`` maps
            names to numbers summed over the epoch (a per-step mean, or a per-sample sum such as
            ``loss * batch_size``); None when the step was skipped (nothing applied).
        on_step: called as ``on_step(i, values_or_None, totals)`` after every step, skipped ones included.

    Returns:
        :class:`EpochTotals`; the stage turns the sums into its means (per step or per image).
    """
    totals = EpochTotals(start=time.perf_counter())
    for i, batch in enumerate(batches):
        out = step(i, batch)
        values = None
        if out is None:
            totals.skipped += 1
        else:
            values, n = out
            for k, v in values.items():
                totals.sums[k] = totals.sums.get(k, 0) + v
            totals.steps += 1
            totals.images += n
        if on_step is not None:
            on_step(i, values, totals)
    totals.seconds = time.perf_counter() - totals.start
    return totals


@torch.no_grad()
def evaluate(model: nn.Module, loader: Optional[Iterable], device: torch.device, dist: Optional[DistInfo] = None,
             precision: str = "fp32", channels_last: bool = False) -> Optional[Dict[str, float]]:
    """Top-1/top-5 accuracy and mean cross-entropy of a classifier over an exact split, summed across ranks.

    Args:
        model: maps images ``[B, ...]`` to class logits ``z [B, C]``; evaluated in eval mode, its mode restored.
        loader: batches ``(images [B, ...], labels [B], ...)`` (extra items ignored); None gives None.
        device: where ``model`` runs.
        dist: rank/world (the four counters are all-reduced); None = one process.
        precision: autocast precision (CUDA only; see :func:`pand.engine.device.autocast`).
        channels_last: channels-last images on CUDA.

    Returns:
        ``{"top1", "top5", "loss", "n"}`` (accuracies as fractions of ``n``; top-5 is top-``C`` when ``C < 5``), or
        None when ``loader`` is None.
    """
    if loader is None:
        return None
    dist = dist or DistInfo()
    was_training = model.training
    model.eval()
    stats = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss_sum, n
    fmt = memory_format(device, channels_last)
    for batch in loader:
        images = batch[0].to(device, non_blocking=True).contiguous(memory_format=fmt)
        labels = batch[1].to(device, non_blocking=True)
        with autocast(device, precision):
            z = model(images)
        z = z.float()
        top = z.topk(min(5, z.shape[1]), dim=1).indices
        stats[0] += (top[:, 0] == labels).sum()
        stats[1] += (top == labels[:, None]).any(dim=1).sum()
        stats[2] += F.cross_entropy(z, labels, reduction="sum").double()
        stats[3] += labels.numel()
    all_reduce_sum(stats, dist)
    model.train(was_training)
    n = max(stats[3].item(), 1.0)
    return {"top1": stats[0].item() / n, "top5": stats[1].item() / n, "loss": stats[2].item() / n,
            "n": int(stats[3].item())}
