"""Reading the NSD teacher-feature cache during training: :class:`TeacherFeatureCache` (memory-mapped shards) and
:class:`CachedTeacher`, the :class:`~pand.models.teacher_source.TeacherSource` that replays the cached views.

In epoch ``e`` image ``i`` uses view ``replay_views(seed, e, N, V)[i]`` (:func:`pand.engine.loaders.replay_views`: each
image cycles through its ``V`` views in its own random order, redrawn every ``V`` epochs). The engine asks
:meth:`CachedTeacher.views` before the epoch and hands them to the training sampler, so the data pipeline reproduces
exactly the pixels the teacher encoded; :meth:`CachedTeacher.features` reads only the batch's rows and moves only the
``[B, D_t]`` batch to the images' device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

from pand.engine.loaders import replay_views
from pand.errors import ArtifactError, PandError
from pand.utils.io import read_json

from .format import MANIFEST, _manifest_ok, _memmap, _read_header, _shard_path, _shard_ranges, _valid_shard

__all__ = ["TeacherFeatureCache", "CachedTeacher"]


class TeacherFeatureCache:
    """Memory-mapped, read-only view of a built cache: ``lookup(indices, view) -> [B, D_t]`` float32.

    Args:
        root: a directory written by :func:`build_teacher_cache` (with its ``manifest.json``).

    Attributes:
        count, views, embed_dim, shard_size, dtype, key: from the manifest.
        shards: one read-only ``numpy.memmap`` ``[n_s, V, D_t]`` per shard file.

    Raises:
        ArtifactError: no/incomplete manifest, or a shard that does not match it (rebuild the cache).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not _manifest_ok(self.root, None):
            raise ArtifactError(f"{self.root} is not a complete NSD teacher cache (no complete manifest.json); delete "
                                f"it and rebuild (it is rebuilt automatically when nsd.teacher_cache.views > 0)")
        m = read_json(self.root / MANIFEST)
        self.key, self.count, self.views = str(m["key"]), int(m["count"]), int(m["views"])
        self.embed_dim, self.shard_size, self.dtype = int(m["embed_dim"]), int(m["shard_size"]), str(m["dtype"])
        self.shards = []
        for s, (a, b) in enumerate(_shard_ranges(self.count, self.shard_size)):
            path = _shard_path(self.root, s)
            if not _valid_shard(path, self.key, a, b - a, self.views, self.embed_dim, self.dtype):
                raise ArtifactError(f"teacher cache shard {path} is missing or does not match {self.root / MANIFEST}; "
                                    f"delete {self.root} and rebuild")
            self.shards.append(_memmap(path, _read_header(path)))

    @classmethod
    def in_memory(cls, features: np.ndarray) -> "TeacherFeatureCache":
        """A cache over one in-memory array ``features [N, V, D_t]`` (no files, no manifest): the same
        :meth:`lookup` as a built cache (the ``views=auto`` probe times it on a stand-in table)."""
        if features.ndim != 3:
            raise PandError(f"an in-memory teacher cache is [N, V, D_t], got shape {tuple(features.shape)}")
        self = cls.__new__(cls)
        self.root, self.key, self.dtype = None, "in-memory", str(features.dtype)
        self.count, self.views, self.embed_dim = (int(n) for n in features.shape)
        self.shard_size, self.shards = max(1, self.count), [features]
        return self

    def nbytes(self) -> int:
        """Size of the stored features in bytes (``N * V * D_t * itemsize``)."""
        return sum(int(m.nbytes) for m in self.shards)

    def lookup(self, indices: Sequence[int] | torch.Tensor, view: int | Sequence[int]) -> torch.Tensor:
        """Features of dataset ``indices`` in ``view``: ``[B, D_t]`` float32 on the CPU (only those rows are read).

        Args:
            indices: ``B`` dataset indices.
            view: one view for all, or ``B`` views (one per index).

        Raises:
            PandError: an index outside ``[0, count)``, a view outside ``[0, V)``, or ``B`` indices with another
                number of views.
        """
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64).reshape(-1)
        views = np.asarray(view.cpu() if isinstance(view, torch.Tensor) else view, dtype=np.int64).reshape(-1)
        if views.size == 1:
            views = np.broadcast_to(views, idx.shape)
        if views.shape != idx.shape:
            raise PandError(f"teacher cache lookup: {idx.size} indices but {views.size} views")
        if views.size and (views.min() < 0 or views.max() >= self.views):
            bad = int(views.max() if views.max() >= self.views else views.min())
            raise PandError(f"teacher cache has views 0..{self.views - 1}, asked for view {bad}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.count):
            raise PandError(f"teacher cache holds {self.count} images, asked for index {int(idx.max())}; the cache "
                            f"belongs to another dataset (its key should have prevented this: rebuild it)")
        out = np.empty((idx.size, self.embed_dim), dtype=np.float32)
        shard, local = idx // self.shard_size, idx % self.shard_size
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            out[sel] = self.shards[int(s)][local[sel], views[sel]]
        return torch.from_numpy(out)


class CachedTeacher:
    """A :class:`~pand.models.teacher_source.TeacherSource` that reads cached features instead of running the teacher.

    In epoch ``e`` image ``i`` uses view ``replay_views(seed, e, N, V)[i]`` (:meth:`views`); the engine passes those
    views to the training sampler, so the student's pixels are exactly the ones the teacher encoded at build time.

    Args:
        cache: an opened :class:`TeacherFeatureCache` (or its directory).
        seed: seed of the view order (default: the ``trainer.seed`` the cache was built with, from its manifest).

    Attributes:
        num_views: V, the views stored per image.
        embed_dim: the teacher's feature size.
    """

    def __init__(self, cache: TeacherFeatureCache | str | Path, seed: Optional[int] = None):
        self.cache = cache if isinstance(cache, TeacherFeatureCache) else TeacherFeatureCache(cache)
        self.embed_dim = self.cache.embed_dim
        self.num_views = self.cache.views
        self.seed = int(read_json(self.cache.root / MANIFEST)["seed"] if seed is None else seed)
        self.epoch: Optional[int] = None
        self._table: Tuple[int, Any] = (-1, None)

    def views(self, epoch: int, count: int):
        """``[count]`` views of every image in ``epoch`` (:func:`pand.engine.loaders.replay_views`).

        Raises:
            PandError: ``count`` is not the number of images in the cache.
        """
        if int(count) != self.cache.count:
            raise PandError(f"teacher cache holds {self.cache.count} images, the training split has {count}; the "
                            f"cache belongs to another dataset (rebuild it)")
        if self._table[0] != int(epoch):
            self._table = (int(epoch), replay_views(self.seed, epoch, count, self.num_views))
        return self._table[1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @torch.no_grad()
    def features(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Cached ``[B, D_t]`` float32 features of ``indices`` in their views of this epoch, on ``images.device``.

        Raises:
            PandError: called before :meth:`set_epoch`, or ``indices`` does not match the batch.
        """
        if self.epoch is None:
            raise PandError("CachedTeacher.features called before set_epoch(epoch): the view is unknown")
        if len(indices) != images.shape[0]:
            raise PandError(f"CachedTeacher: {len(indices)} indices for a batch of {images.shape[0]} images")
        idx = indices.cpu().numpy() if isinstance(indices, torch.Tensor) else indices
        f = self.cache.lookup(idx, self.views(self.epoch, self.cache.count)[idx])
        if images.device.type == "cuda":
            return f.pin_memory().to(images.device, non_blocking=True)
        return f.to(images.device)
