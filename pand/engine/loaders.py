"""Seeded data order and DataLoader settings shared by the training loops.

* :func:`loader_kwargs`: the worker / pinned-memory settings of a DataLoader from ``trainer.*``.
* :func:`epoch_permutation` + :func:`index_batches`: the shuffled mini-batches of a stage that trains on tensors
  already in memory (Stage PSC's cached features). Epoch ``e`` draws its order from its own generator seeded with
  ``seed * 1_000_003 + e``, so a resumed run replays exactly the order the interrupted one would have used,
  whatever happened to the global RNG.

(Stage NSD's image loaders, with per-sample replayable augmentation and rank sharding, are
:func:`pand.nsd.data.make_train_loader` / :func:`pand.nsd.data.make_eval_loader`, built on :func:`loader_kwargs`.)
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch

__all__ = ["loader_kwargs", "epoch_permutation", "index_batches"]


def loader_kwargs(trainer_cfg: Any, device_type: str) -> Dict[str, Any]:
    """``num_workers``, ``pin_memory`` (CUDA only) and ``persistent_workers`` (only with workers) for a DataLoader.

    Args:
        trainer_cfg: the ``trainer`` section (``num_workers``, ``pin_memory``, ``persistent_workers``).
        device_type: ``cpu`` or ``cuda``.
    """
    workers = int(trainer_cfg.num_workers)
    return dict(
        num_workers=workers,
        pin_memory=bool(trainer_cfg.pin_memory) and device_type == "cuda",
        persistent_workers=bool(trainer_cfg.persistent_workers) and workers > 0,
    )


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of ``n`` samples in ``epoch``: ``randperm(n)`` from a CPU generator seeded ``seed * 1_000_003 + epoch``.

    Returns:
        ``[n]`` int64 permutation (on CPU); the global RNG is not touched.
    """
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(int(n), generator=gen)


def index_batches(order: torch.Tensor, batch_size: int) -> List[torch.Tensor]:
    """``order`` cut into consecutive batches of ``batch_size`` (the last one may be smaller)."""
    return [order[i:i + batch_size] for i in range(0, order.numel(), batch_size)]
