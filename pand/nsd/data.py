"""Data plumbing of Stage NSD: index-returning datasets with replayable augmentation, samplers, loaders.

* :class:`IndexedDataset` returns ``(image, label, index)`` and draws the random augmentation of sample ``i``
  in view ``v`` from a seed that depends only on ``(seed, v, i)``, so the same view reproduces the same
  pixels in any process, worker or resumed run (the teacher-cache seam relies on it; see
  :mod:`pand.nsd.teacher_source`).
* Training uses :class:`torch.utils.data.DistributedSampler` (also for one process, with ``num_replicas=1``)
  re-shuffled by epoch, wrapped by :class:`ViewSampler` so every index travels with its view.
* Evaluation uses :class:`ShardSampler`: rank ``r`` takes indices ``r, r + W, ...`` with no padding, so the
  summed counts over ranks are exactly the split's size.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from pand.errors import DataError
from pand.utils.distributed import DistInfo

__all__ = ["mix_seed", "IndexedDataset", "ViewSampler", "ShardSampler", "make_train_loader", "make_eval_loader"]

_MASK = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 chaining): deterministic across processes and Python versions."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & _MASK)) & _MASK
        x = (x + 0x9E3779B97F4A7C15) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        x ^= x >> 31
    return x & ((1 << 63) - 1)


@contextmanager
def _seeded(seed: int):
    """Seed torch (CPU), python ``random`` and numpy for the block; restore their previous states after."""
    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class IndexedDataset(torch.utils.data.Dataset):
    """Wrap a ``(image, label)`` dataset to return ``(image, label, index)`` with per-sample seeded transforms.

    Args:
        dataset: any map-style dataset returning ``(image, label)``.
        seed: run seed; sample ``i`` of view ``v`` is transformed under ``mix_seed(seed, v, i)``.

    Keys may be an ``int`` (view 0) or an ``(index, view)`` pair as yielded by :class:`ViewSampler`.
    """

    def __init__(self, dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, view = (key if isinstance(key, tuple) else (key, 0))
        with _seeded(mix_seed(self.seed, view, index)):
            image, label = self.dataset[index]
        return image, int(label), int(index)


class ViewSampler(Sampler):
    """Yield ``(index, view)`` pairs from ``sampler``; ``view`` is set by the engine before each epoch."""

    def __init__(self, sampler: Sampler, view: int = 0):
        self.sampler = sampler
        self.view = int(view)

    def set_epoch(self, epoch: int, view: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.view = int(view)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        view = self.view
        return ((int(i), view) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` of ``range(n)``: disjoint shards, no padding, no duplicates."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices: Sequence[int] = range(rank, n, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _loader_kwargs(trainer_cfg, device_type: str) -> dict:
    workers = int(trainer_cfg.num_workers)
    return dict(
        num_workers=workers,
        pin_memory=bool(trainer_cfg.pin_memory) and device_type == "cuda",
        persistent_workers=bool(trainer_cfg.persistent_workers) and workers > 0,
    )


def make_train_loader(dataset, batch_size: int, seed: int, dist: DistInfo, trainer_cfg, device_type: str
                      ) -> DataLoader:
    """Shuffled, per-epoch re-seeded training loader over ``IndexedDataset(dataset)``.

    Args:
        dataset: the ``(image, label)`` training dataset (augmenting transform attached).
        batch_size: per-device batch.
        seed: shuffling and augmentation seed.
        dist: this process's rank/world.
        trainer_cfg: ``num_workers``, ``pin_memory``, ``persistent_workers``.
        device_type: ``cpu`` or ``cuda``.

    Returns:
        A DataLoader whose ``batch_sampler.sampler`` is a :class:`ViewSampler` (call ``set_epoch(epoch, view)``).
        The last incomplete batch is dropped (a batch of one breaks BatchNorm) unless it is the only one.

    Raises:
        DataError: a shard with fewer than 2 images.
    """
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed)
    n = len(sampler)
    if n < 2:
        raise DataError(f"the training split has {len(dataset)} image(s) for {dist.world_size} device(s); "
                        f"training needs at least 2 per device")
    return DataLoader(
        IndexedDataset(dataset, seed), batch_size=min(batch_size, n), sampler=ViewSampler(sampler),
        drop_last=n >= batch_size, **_loader_kwargs(trainer_cfg, device_type),
    )


def make_eval_loader(dataset, batch_size: int, dist: DistInfo, trainer_cfg, device_type: str
                     ) -> Optional[DataLoader]:
    """Exact, unpadded, rank-sharded evaluation loader (None when ``dataset`` is None)."""
    if dataset is None:
        return None
    kw = _loader_kwargs(trainer_cfg, device_type)
    kw["persistent_workers"] = False  # evaluated rarely; do not keep workers around
    return DataLoader(IndexedDataset(dataset), batch_size=batch_size,
                      sampler=ShardSampler(len(dataset), dist.rank, dist.world_size), **kw)
