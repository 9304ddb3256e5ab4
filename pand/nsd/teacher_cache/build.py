"""Building the NSD teacher-feature cache: every training image's ``V`` replayed views, encoded once by the teacher.

:func:`build_teacher_cache` reuses a complete entry, completes a partial one (the finished shards of a crashed
build are kept) and, under torchrun, deals the missing shards round-robin to the ranks. Each image file is decoded
once for its ``V`` views (:class:`_DecodeOnce`); the pixels are those of ``IndexedDataset(dataset, seed)[(i, v)]``,
the call the training loader makes, so the features are exactly those of the pixels the student sees.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pand.data.base import FGVCDataset
from pand.engine.loaders import IndexedDataset
from pand.errors import PandError
from pand.models.teacher_source import LiveTeacher
from pand.utils.digest import tensor_sha256
from pand.utils.distributed import all_gather_object, barrier
from pand.utils.io import atomic_write_json, save_tensors
from pand.utils.lock import LOCK_NAME, exclusive_lock

from .format import (
    DTYPES, MANIFEST, _manifest_ok, _shard_path, _shard_ranges, _valid_shard, teacher_cache_dir, teacher_cache_key,
    teacher_cache_meta,
)

__all__ = ["build_teacher_cache"]


class _DecodeOnce:
    """``dataset[index]`` of a :class:`pand.data.FGVCDataset` that decodes each image once for its consecutive views.

    The build asks for ``(i, 0), (i, 1), ..., (i, V-1)`` in a row; the decoded RGB image of the last index is kept
    (one image per process / DataLoader worker) and every view transforms a copy of it
    (:meth:`pand.data.FGVCDataset.item_from_image`). Decoding draws no random numbers, so under
    :class:`~pand.engine.loaders.IndexedDataset`'s ``mix_seed(seed, v, i)`` the transform of view ``v`` draws exactly what
    ``dataset[i]`` draws: the pixels, hence the features, are bit-identical to decoding every view.
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self.samples = dataset.samples
        self._last: Tuple[int, Any] = (-1, None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if self._last[0] != index:
            self._last = (-1, None)  # never keep a stale image if decoding raises
            self._last = (index, self.dataset.load_image(index))
        return self.dataset.item_from_image(self._last[1].copy(), index)


def _decode_once(dataset: Any) -> Any:
    """``dataset`` wrapped in :class:`_DecodeOnce` when it is a plain FGVCDataset (same ``__getitem__``), else as is."""
    if isinstance(dataset, FGVCDataset) and type(dataset).__getitem__ is FGVCDataset.__getitem__ \
            and type(dataset).load_image is FGVCDataset.load_image:
        return _DecodeOnce(dataset)
    return dataset


def _encode_shard(live: LiveTeacher, dataset: IndexedDataset, start: int, end: int, views: int, batch_size: int,
                  num_workers: int, bar) -> torch.Tensor:
    """``[end - start, V, D]`` float32 features of the replayed views ``(i, v)``, ``i`` in ``[start, end)``.

    The views of one image are consecutive keys, so a :class:`_DecodeOnce` dataset decodes each image once (twice
    at most when its views straddle two batches given to different DataLoader workers).
    """
    device = getattr(live.teacher, "device", torch.device("cpu"))
    keys = [(i, v) for i in range(start, end) for v in range(views)]
    loader = DataLoader(dataset, batch_size=max(1, int(batch_size)), sampler=keys, num_workers=int(num_workers),
                        pin_memory=device.type == "cuda", drop_last=False)
    out = []
    for images, _, indices in loader:
        images = images.to(device, non_blocking=True)
        out.append(live.features(images, indices).float().cpu())
        bar.update(images.shape[0])
    feats = torch.cat(out)
    if feats.shape[0] != len(keys):  # pragma: no cover - drop_last=False never drops
        raise PandError(f"teacher cache: encoded {feats.shape[0]} views for {len(keys)} requested")
    return feats.view(end - start, views, -1)


def build_teacher_cache(
    live: LiveTeacher,
    dataset: Any,
    cache_dir: str | Path,
    seed: int,
    views: int,
    shard_size: int = 4096,
    dtype: str = "fp16",
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    key_extra: Optional[Mapping[str, Any]] = None,
    dist: Any = None,
) -> Path:
    """Encode V replayed augmentations of every training image with the teacher, once; reuse them afterwards.

    A complete cache with the same key is reused without any teacher forward pass; a partial one (crash
    mid-build) keeps its finished shards and only the missing shards are computed. The global RNG states
    (torch CPU, python, numpy) are left as they were, so building never changes what a seeded run draws next.

    Distributed (``dist`` with ``world_size > 1``; every rank calls this): the shards rank 0 finds missing are
    dealt round-robin, each rank encodes and writes only its own (atomically, so ranks never write the same file
    at once); after a barrier every rank checks that it sees all shards, and rank 0 alone writes ``manifest.json``
    (atomically) before a last barrier. When some rank cannot see the others' shards (``cache_dir`` on node-local
    disk), the ranks of that node encode what they miss and that node's local rank 0 writes its own manifest.

    Args:
        live: the live teacher source whose forward pass is cached (:class:`LiveTeacher`).
        dataset: the training dataset with its augmenting transform (a :class:`pand.data.FGVCDataset`); view ``v`` of
            image ``i`` is ``IndexedDataset(dataset, seed)[(i, v)]``, the same call the training loader makes.
        cache_dir: root of the caches (``<cache_dir>/nsd_teacher/<key[:32]>/`` is used).
        seed: ``trainer.seed``.
        views: V >= 1 (8-16 recommended).
        shard_size: images per shard file.
        dtype: ``fp16`` (default; half the disk) or ``fp32`` (bit-exact with the live teacher).
        batch_size: teacher batch (``teacher.batch_size``).
        num_workers: DataLoader workers for decoding/augmenting.
        progress: show a tqdm bar (views encoded).
        key_extra: more JSON-able key parts.
        dist: :class:`pand.utils.distributed.DistInfo` (default: one process).

    Returns:
        The cache directory (open it with :class:`TeacherFeatureCache`).

    Raises:
        PandError: bad ``views``/``shard_size``/``dtype``, a dataset without ``samples``, or (distributed) shards
            that are still missing after every rank built its share.
    """
    views, shard_size = int(views), int(shard_size)
    if views < 1:
        raise PandError(f"nsd.teacher_cache.views={views}: the cache needs at least 1 view (0 = live teacher)")
    if shard_size < 1:
        raise PandError(f"nsd.teacher_cache.shard_size={shard_size} must be >= 1 (images per shard file)")
    if dtype not in DTYPES:
        raise PandError(f"nsd.teacher_cache.dtype={dtype!r}; valid: {', '.join(DTYPES)}")
    meta = teacher_cache_meta(live, dataset, seed, views, dtype, shard_size, key_extra)
    key = teacher_cache_key(meta)
    root = teacher_cache_dir(cache_dir, meta)
    n, dim = len(dataset), int(live.embed_dim)
    ranges = _shard_ranges(n, shard_size)
    manifest = {"key": key, "complete": True, "num_shards": len(ranges), **meta}

    def missing() -> List[Tuple[int, int, int]]:
        return [(s, a, b) for s, (a, b) in enumerate(ranges)
                if not _valid_shard(_shard_path(root, s), key, a, b - a, views, dim, dtype)]

    def build(todo: Sequence[Tuple[int, int, int]], rank: int = 0) -> None:
        _build_shards(live, IndexedDataset(_decode_once(dataset), int(seed)), root, key, todo, views, dim, dtype,
                      batch_size, num_workers, progress, rank)

    if dist is None or not dist.distributed:
        if not missing() and _manifest_ok(root, key):  # every shard's checksum verified: reuse, no lock needed
            return root
        with exclusive_lock(root / LOCK_NAME, f"NSD teacher cache entry {root}",
                            "it is being built by that process: rerun when it has finished, or set cache_dir to "
                            "another folder"):
            todo = missing()  # again under the lock: another process may have finished it meanwhile
            if todo or not _manifest_ok(root, key):
                build(todo)
                atomic_write_json(root / MANIFEST, manifest)
        return root
    return _build_distributed(root, key, manifest, missing, build, dist)


def _build_shards(live: LiveTeacher, indexed: IndexedDataset, root: Path, key: str,
                  todo: Sequence[Tuple[int, int, int]], views: int, dim: int, dtype: str, batch_size: int,
                  num_workers: int, progress: bool, rank: int) -> None:
    """Encode and write the shards ``todo`` = ``[(shard, start, end)]`` (each file atomically)."""
    total = sum(b - a for _, a, b in todo) * views
    with torch.random.fork_rng(devices=[]), \
            tqdm(total=total, desc=f"nsd teacher cache ({views} views)", unit="view", disable=not progress,
                 leave=False, dynamic_ncols=True) as bar:
        for s, a, b in todo:
            feats = _encode_shard(live, indexed, a, b, views, batch_size, num_workers, bar).to(DTYPES[dtype])
            _check_finite(feats, indexed, a)
            save_tensors(_shard_path(root, s), {"features": feats},
                         {"key": key, "shard": s, "start": a, "count": b - a, "views": views, "embed_dim": dim,
                          "dtype": dtype, "rank": int(rank), "sha256": tensor_sha256(feats)})


def _check_finite(feats: torch.Tensor, indexed: Any, start: int) -> None:
    """Refuse NaN/inf teacher features (``feats [n, V, D]`` of images ``start..``), naming the images."""
    bad = (~torch.isfinite(feats)).flatten(1).any(dim=1).nonzero().flatten().tolist()
    if bad:
        samples = getattr(getattr(indexed, "dataset", None), "samples", None)
        names = [str(samples[start + i][0]) if samples else f"#{start + i}" for i in bad[:5]]
        raise PandError(
            f"NSD teacher cache: the teacher produced NaN/inf features for {len(bad)} training image(s), e.g. "
            f"{', '.join(names)}. Check those files (or the teacher weights / teacher.precision); the shard was not "
            f"written."
        )


def _local_world_size() -> int:
    """Ranks on this node (torchrun's ``LOCAL_WORLD_SIZE``; 1 when unknown)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def _missing_after_wait(missing, wait_s: float = 10.0) -> List[int]:
    """Shards this rank cannot see, polled for up to ``wait_s`` (a shared filesystem may show new files late)."""
    deadline = time.monotonic() + wait_s
    while True:
        gone = [s for s, _, _ in missing()]
        if not gone or time.monotonic() >= deadline:
            return gone
        time.sleep(1.0)


def _build_distributed(root: Path, key: str, manifest: Mapping[str, Any], missing, build, dist: Any) -> Path:
    """Every rank builds its share of the missing shards; the manifest is written once, after a barrier."""
    if all(all_gather_object(_manifest_ok(root, key), dist)):
        return root
    todo = all_gather_object(missing() if dist.is_main else None, dist)[0]  # rank 0's view, dealt round-robin
    build(todo[dist.rank::dist.world_size], dist.rank)
    barrier(dist)
    unseen = all_gather_object(_missing_after_wait(missing), dist)
    if not any(unseen):  # one shared directory: rank 0 writes the one manifest
        if dist.is_main:
            atomic_write_json(root / MANIFEST, dict(manifest))
        barrier(dist)
        return root
    # some node does not see the shards the others wrote (a node-local cache_dir): its ranks encode what they miss
    if dist.is_main:
        nodes = sorted(r for r, u in enumerate(unseen) if u)
        warnings.warn(f"NSD teacher cache: ranks {nodes} do not see the shards written by the other ranks under "
                      f"{root} (cache_dir is not shared between nodes); each node completes its own copy, which "
                      f"repeats teacher work. Put cache_dir on a filesystem every node shares to build it once")
    slot, local_world = dist.local_rank % _local_world_size(), _local_world_size()
    build(missing()[slot::local_world], dist.rank)
    barrier(dist)
    still = all_gather_object([s for s, _, _ in missing()], dist)
    bad = {r: u for r, u in enumerate(still) if u}
    if bad:
        raise PandError(f"NSD teacher cache {root}: shards still missing after every rank built its share "
                        f"(rank: shards) {bad}; check that cache_dir is writable and has free space on every node")
    if (dist.is_main and not unseen[dist.rank]) or (unseen[dist.rank] and slot == 0):  # one per directory
        atomic_write_json(root / MANIFEST, dict(manifest))
    barrier(dist)
    return root
