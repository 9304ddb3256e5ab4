"""Seeded data order and DataLoaders shared by the training loops.

* :func:`loader_kwargs`: the worker / pinned-memory settings of a DataLoader from ``trainer.*``.
* :func:`epoch_permutation` + :func:`index_batches`: the shuffled mini-batches of a stage that trains on tensors
  already in memory (Stage PSC's cached features). Epoch ``e`` draws its order from its own generator seeded with
  ``seed * 1_000_003 + e``, so a resumed run replays exactly the order the interrupted one would have used,
  whatever happened to the global RNG.
* Image loaders (Stage NSD, PromptKD, the PromptSRC teacher): :class:`IndexedDataset` returns
  ``(image, label, index)`` and draws the random augmentation of sample ``i`` in view ``v`` from a seed that depends
  only on ``(seed, v, i)``, so the same view reproduces the same pixels in any process, worker or resumed run (the
  NSD teacher cache relies on it; see :mod:`pand.models.teacher_source`).
* :func:`make_train_loader`: :class:`torch.utils.data.DistributedSampler` (also for one process, with
  ``num_replicas=1``) re-shuffled by epoch, wrapped by :class:`ViewSampler` so every index travels with its view
  (per image and epoch; a teacher cache picks them with :func:`replay_views`).
* :func:`make_transfer_loader`: the same for a transfer set (labelled images followed by unlabelled ones) with a
  :class:`MixedBatchSampler`: every batch holds a fixed number of labelled images, so no batch lacks labels.
* :func:`make_eval_loader`: :class:`ShardSampler`: rank ``r`` takes indices ``r, r + W, ...`` with no padding, so
  the summed counts over ranks are exactly the split's size.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from pand.errors import DataError
from pand.utils.distributed import DistInfo

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import TrainerCfg

__all__ = ["loader_kwargs", "epoch_permutation", "index_batches", "mix_seed", "replay_views", "IndexedDataset",
           "ViewSampler", "ShardSampler", "MixedBatchSampler", "steps_per_epoch", "labeled_per_batch", "make_train_loader",
           "make_transfer_loader", "make_eval_loader", "set_loader_epoch"]


def loader_kwargs(trainer_cfg: TrainerCfg, device_type: str) -> Dict[str, Any]:
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


_MASK = (1 << 64) - 1
_VIEW_TAG = 0x5649455753  # b"VIEWS": keeps the view-order stream apart from the augmentation seeds mix_seed(seed, v, i)


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


def replay_views(seed: int, epoch: int, count: int, views: int) -> np.ndarray:
    """The stored view each of ``count`` images uses in ``epoch`` when ``V = views`` views are cached.

    Every image walks through all ``V`` views once per cycle of ``V`` epochs, in its own random order, and the
    orders are redrawn every cycle::

        view(i, e) = P_c[i, e mod V],   c = e // V,
        P_c = [count, V] matrix of independent uniform permutations of 0..V-1, drawn from mix_seed(seed, TAG, c)

    So within one step the images of a batch use different views, over any ``V`` consecutive epochs each image
    uses each view exactly once (no view is over-used), and the result is a pure function of its arguments: every
    rank, DataLoader worker and resumed run agrees without communicating.

    Args:
        seed: ``trainer.seed``.
        epoch: 0-based epoch.
        count: number of training images ``N``.
        views: ``V >= 1``.

    Returns:
        ``[count]`` int64 array with values in ``[0, V)``.
    """
    views, epoch = int(views), int(epoch)
    if views < 1:
        raise ValueError(f"replay_views needs views >= 1, got {views}")
    cycle, pos = divmod(epoch, views)
    rng = np.random.default_rng(mix_seed(seed, _VIEW_TAG, cycle))
    orders = rng.permuted(np.tile(np.arange(views, dtype=np.int64), (int(count), 1)), axis=1)
    return np.ascontiguousarray(orders[:, pos])


@contextmanager
def _seeded(seed: int):
    """Seed torch (CPU), python ``random`` and numpy for the block; restore their previous states after."""
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
    """Yield ``(index, view)`` pairs from ``sampler``; the views are set by the engine before each epoch.

    ``views`` is one int (every image uses that view: the live teacher's fresh augmentation ``view = epoch``) or a
    per-image sequence indexed by dataset index (a teacher cache's :func:`replay_views`).
    """

    def __init__(self, sampler: Sampler, views: Union[int, Sequence[int]] = 0):
        self.sampler = sampler
        self.views = views

    def set_epoch(self, epoch: int, views: Union[int, Sequence[int]]) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.views = views

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        views = self.views
        if isinstance(views, (int, np.integer)):
            return ((int(i), int(views)) for i in self.sampler)
        return ((int(i), int(views[int(i)])) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def steps_per_epoch(n_labeled: int, n_unlabeled: int, batch_size: int, world_size: int = 1) -> int:
    """Optimiser steps of one training epoch: ``(N_l + N_u) // (B * W)``, at least 1. With a transfer set that is
    :class:`MixedBatchSampler`'s length; without one (``N_u = 0``) it is :func:`make_train_loader`'s (the last
    partial batch is dropped unless it is the only one)."""
    return max(1, (int(n_labeled) + int(n_unlabeled)) // (int(batch_size) * int(world_size)))


def labeled_per_batch(batch_size: int, n_labeled: int, n_unlabeled: int, fraction: Optional[float] = None) -> int:
    """Labelled images per batch of a transfer set: ``round(batch_size * f)`` clipped to ``[1, batch_size - 1]``.

    ``f = fraction`` (``nsd.labeled_fraction``), or the labelled share ``n_labeled / (n_labeled + n_unlabeled)``
    when None. At least one labelled image is in every batch (CE is never computed on an empty set).

    Raises:
        DataError: a batch too small to hold both kinds (``batch_size < 2``) or a fraction outside ``(0, 1)``.
    """
    if batch_size < 2:
        raise DataError(f"a transfer set needs a per-device batch of at least 2 (one labelled, one unlabelled); "
                        f"got {batch_size}. Raise nsd.batch_size.")
    f = n_labeled / max(1, n_labeled + n_unlabeled) if fraction is None else float(fraction)
    if not 0.0 < f < 1.0:
        raise DataError(f"nsd.labeled_fraction={fraction} must be in (0, 1)")
    return int(min(max(round(batch_size * f), 1), batch_size - 1))


class MixedBatchSampler(Sampler):
    """Batches of ``per_batch`` labelled and ``batch_size - per_batch`` unlabelled indices of a transfer set.

    Indices ``0..n_labeled-1`` are the labelled images, ``n_labeled..n_labeled+n_unlabeled-1`` the unlabelled ones.
    An epoch is ``floor((n_labeled + n_unlabeled) / (batch_size * world))`` steps (at least one), so it shows about
    as many images as one pass over the whole set. Each kind is drawn without replacement from its own seeded
    permutation of the epoch (seeded ``mix_seed(seed, kind, epoch, pass)``), re-drawn when used up, and rank
    ``r`` of ``W`` takes every ``W``-th slot of each stream: a pure function of ``(seed, epoch, rank)``, so resumed
    runs and DDP ranks agree without communicating. Yields lists of ``(index, view)`` pairs like
    :class:`ViewSampler`; :meth:`set_epoch` takes the epoch and the views.
    """

    def __init__(self, n_labeled: int, n_unlabeled: int, batch_size: int, per_batch: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if n_labeled < 1 or n_unlabeled < 1:
            raise DataError(f"a transfer set needs labelled and unlabelled images (got {n_labeled} and {n_unlabeled})")
        if not 1 <= per_batch < batch_size:
            raise DataError(f"labelled images per batch must be in 1..{batch_size - 1}, got {per_batch}")
        self.n_labeled, self.n_unlabeled = int(n_labeled), int(n_unlabeled)
        self.batch_size, self.per_batch = int(batch_size), int(per_batch)
        self.seed, self.rank, self.world = int(seed), int(rank), int(world_size)
        self.epoch = 0
        self.views: Union[int, Sequence[int]] = 0

    def set_epoch(self, epoch: int, views: Union[int, Sequence[int]] = 0) -> None:
        self.epoch, self.views = int(epoch), views

    def __len__(self) -> int:
        return steps_per_epoch(self.n_labeled, self.n_unlabeled, self.batch_size, self.world)

    def _stream(self, n: int, offset: int, kind: int, count: int) -> List[int]:
        """``count`` indices of this rank from kind ``kind``'s permutations (re-drawn per pass), plus ``offset``."""
        out: List[int] = []
        need = count * self.world
        passes = 0
        while len(out) < need:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, kind, self.epoch, passes))
            out.extend(int(i) + offset for i in torch.randperm(n, generator=gen))
            passes += 1
        return out[self.rank:need:self.world]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        steps, k = len(self), self.per_batch
        lab = self._stream(self.n_labeled, 0, 1, steps * k)
        unl = self._stream(self.n_unlabeled, self.n_labeled, 2, steps * (self.batch_size - k))
        views = self.views
        for s in range(steps):
            idx = lab[s * k:(s + 1) * k] + unl[s * (self.batch_size - k):(s + 1) * (self.batch_size - k)]
            if isinstance(views, (int, np.integer)):
                yield [(i, int(views)) for i in idx]
            else:
                yield [(i, int(views[i])) for i in idx]


def set_loader_epoch(loader: DataLoader, epoch: int, views: Union[int, Sequence[int]]) -> None:
    """Set the epoch (shuffling) and the per-image views of a loader from :func:`make_train_loader` or
    :func:`make_transfer_loader`."""
    sampler = loader.batch_sampler if isinstance(loader.batch_sampler, MixedBatchSampler) else loader.sampler
    sampler.set_epoch(epoch, views)


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` of ``range(n)``: disjoint shards, no padding, no duplicates."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices: Sequence[int] = range(rank, n, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_train_loader(dataset, batch_size: int, seed: int, dist: DistInfo, trainer_cfg: TrainerCfg, device_type: str
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
        A DataLoader whose ``batch_sampler.sampler`` is a :class:`ViewSampler` (call ``set_epoch(epoch, views)``).
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
        drop_last=n >= batch_size, **loader_kwargs(trainer_cfg, device_type),
    )


def make_transfer_loader(dataset, n_labeled: int, batch_size: int, seed: int, dist: DistInfo, trainer_cfg: TrainerCfg,
                         device_type: str, labeled_fraction: Optional[float] = None) -> DataLoader:
    """Training loader over a transfer set (``n_labeled`` labelled images first, then unlabelled ones) whose every
    batch holds :func:`labeled_per_batch` labelled images (:class:`MixedBatchSampler`).

    Args:
        dataset: the ``(image, label)`` transfer set (augmenting transform attached).
        n_labeled: how many of its first indices are labelled.
        batch_size: per-device batch.
        seed, dist, trainer_cfg, device_type: as :func:`make_train_loader`.
        labeled_fraction: ``nsd.labeled_fraction`` (None: the labelled share of the set).
    """
    n_unlabeled = len(dataset) - int(n_labeled)
    per = labeled_per_batch(batch_size, n_labeled, n_unlabeled, labeled_fraction)
    sampler = MixedBatchSampler(n_labeled, n_unlabeled, batch_size, per, seed, dist.rank, dist.world_size)
    return DataLoader(IndexedDataset(dataset, seed), batch_sampler=sampler, **loader_kwargs(trainer_cfg, device_type))


def make_eval_loader(dataset, batch_size: int, dist: DistInfo, trainer_cfg: TrainerCfg, device_type: str
                     ) -> Optional[DataLoader]:
    """Exact, unpadded, rank-sharded evaluation loader (None when ``dataset`` is None)."""
    if dataset is None:
        return None
    kw = loader_kwargs(trainer_cfg, device_type)
    kw["persistent_workers"] = False  # evaluated rarely; do not keep workers around
    return DataLoader(IndexedDataset(dataset), batch_size=batch_size,
                      sampler=ShardSampler(len(dataset), dist.rank, dist.world_size), **kw)
