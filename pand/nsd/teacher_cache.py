"""Teacher-feature cache with augmentation replay for Stage NSD (fast NSD, issue 8).

The frozen teacher is 100-200x more expensive than the student, and the seed implementation runs it on every
training image in every epoch. With ``nsd.teacher_cache.views = V > 0`` it runs once per *(image, view)*
instead:

1. **Build** (:func:`build_teacher_cache`, before training; under torchrun every rank encodes its share of the
   shards and rank 0 writes the manifest after a barrier). For every training image ``i`` and view
   ``v < V`` the training pipeline's own augmentation is replayed: :class:`pand.nsd.data.IndexedDataset` draws the
   random parameters of ``(i, v)`` from ``mix_seed(trainer.seed, v, i)`` only, so the pixels are a pure function of
   ``(seed, v, i)``. Each image file is decoded once for its ``V`` views (the build asks for ``(i, 0..V-1)`` in a
   row and every view transforms a copy of the decoded image; decoding draws no random numbers, so the pixels are
   those of ``dataset[i]`` under the view's seed, bit for bit). Those pixels go through the very same
   :class:`~pand.nsd.teacher_source.LiveTeacher` path (re-normalisation, resize, channels-last, AMP) and the
   L2-normalised features ``[N, V, D_t]`` are written as
   safetensors (fp16 by default, ``nsd.teacher_cache.dtype=fp32`` for exact parity) in shards of
   ``nsd.teacher_cache.shard_size`` images: ``<cache_dir>/nsd_teacher/<key[:32]>/shard-00000.safetensors`` ...
   plus ``manifest.json``, written last. Every file is written atomically, so a crash keeps the finished shards
   and the next build only computes the missing ones (a tqdm bar counts the views encoded).
2. **Train** (:class:`CachedTeacher`, the :class:`~pand.nsd.teacher_source.TeacherSource` the engine sees). Every
   step samples a view per image: in epoch ``e`` image ``i`` uses view ``replay_views(seed, e, N, V)[i]``
   (:func:`pand.nsd.data.replay_views`: each image cycles through its ``V`` views in its own random order, redrawn
   every ``V`` epochs, so one batch mixes views and no view is over-used). The engine asks
   :meth:`CachedTeacher.views` before the epoch and hands the per-image views to the
   :class:`~pand.nsd.data.ViewSampler`, so the data pipeline reproduces exactly the pixels the teacher encoded;
   :meth:`CachedTeacher.features` looks ``(index, view)`` up in memory-mapped shards (a numpy memmap of each file's
   raw tensor region: only the rows of the batch are read, nothing is loaded whole, and only the ``[B, D_t]`` batch
   is moved to the GPU) and returns float32 on the images' device.

**Key** (same rules as the PSC cache, :mod:`pand.psc.features`): sha256 of the teacher identity, its precision and
the teacher input pipeline (student mean/std -> teacher mean/std, size, interpolation), the dataset's sample list
(``samples_hash``), the training transform's description, ``trainer.seed``, ``V``, the storage dtype and the shard
size, plus the content fingerprint of the image files (:func:`pand.psc.features.content_hash`: size and mtime of
every file, so an image rewritten in place gives another key). Any change gives another directory; a stale or
damaged shard is recomputed, never trusted.

**Integrity.** Every shard stores the sha256 of its feature bytes, verified when the cache is built or reused and
when it is opened (once per file and process while the file is unchanged), so permuted rows, zeroed shards or an
edited value are recomputed (build) or refused (open); NaN/inf features are refused when the shard is encoded,
naming the images. **Locking.** A single-process build holds ``<cache_dir>/nsd_teacher/<key[:32]>/.pand.lock``
(:mod:`pand.utils.lock`): a second run building the same entry is refused, naming the holder's pid. (A
distributed build is not locked against other launches.)

**Choosing V.** 8-16 views are the recommended range: the teacher cost becomes ``V/E`` of the live one (16/300 for
the reference's 300 epochs) while the student still sees 8-16 distinct augmentations of every image, each paired
with the teacher's features of exactly those pixels. ``V = 0`` (the default) keeps the live teacher.
``nsd.teacher_cache.views=auto`` decides per run (:mod:`pand.nsd.teacher_cache_auto`): before training it measures
the teacher's forward and the student's step per batch on a few training batches (RNG states restored, so the seeded
run is unchanged), projects the end-to-end time of live (``E`` epochs of teacher + student) against a
``V = min(8, E)``-view cache (``V x N`` teacher forwards, then ``E`` epochs of student steps + lookups) and uses
the cache only when it is projected at least 10% faster; the choice, the numbers and the reason are printed and
recorded (``<nsd dir>/teacher_cache_choice.json``, ``metrics.jsonl``, ``summary.json``), and a resumed run reuses
it. Whether the cache pays depends on the teacher's cost next to the student's step and on ``E / V``: a teacher
much cheaper than the student's step is not worth caching; a ViT-B/16 teacher of a 64 px ResNet-18 is (5.9x,
``bench/nsd_cache.py``).

**Disk / memory.** ``N * V * D_t * 2`` bytes in fp16: 10k images x 16 views x 1024 dims = 328 MB. Reads are
memory-mapped, so the resident memory is the OS page cache, not a copy per process.

Not yet run on a GPU (none in the development environment; tests/nsd/test_nsd_cuda.py covers the cache on CUDA and
skips without one): the CUDA paths (pinned host buffers with non-blocking copies, teacher AMP/channels-last during
the build) and multi-GPU builds; multi-rank builds are exercised with gloo on CPU (2 processes, and 2 torchrun
"nodes" on one machine sharing one cache directory).
"""
from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from pand.errors import ArtifactError, PandError

from .data import IndexedDataset, replay_views
from .teacher_source import LiveTeacher

__all__ = [
    "CACHE_SUBDIR", "DTYPES", "RECOMMENDED_VIEWS", "teacher_cache_meta", "teacher_cache_key", "teacher_cache_dir",
    "build_teacher_cache", "TeacherFeatureCache", "CachedTeacher", "maybe_cache_teacher",
]

CACHE_SUBDIR = "nsd_teacher"
FORMAT = "pand-nsd-teacher-cache-v1"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
RECOMMENDED_VIEWS = (8, 16)
_MANIFEST = "manifest.json"
_NP_DTYPES = {"F16": "<f2", "F32": "<f4"}


# --------------------------------------------------------------------------------------------------------------
# key
# --------------------------------------------------------------------------------------------------------------
def _dataset_fingerprint(dataset: Any) -> Dict[str, Any]:
    from pand.psc.features import content_hash, describe_transform, samples_hash

    if getattr(dataset, "samples", None) is None:
        raise PandError(
            f"nsd.teacher_cache needs a training dataset with a 'samples' list of (path, label) to key the cache on, "
            f"got {type(dataset).__name__}. Use a pand.data.FGVCDataset or set nsd.teacher_cache.views=0 (live teacher)"
        )
    return {
        "dataset": str(getattr(dataset, "name", "")),
        "count": len(dataset),
        "samples_hash": samples_hash(dataset),
        "content_hash": content_hash(dataset),
        "transform": describe_transform(getattr(dataset, "transform", None)),
    }


def teacher_cache_meta(live: LiveTeacher, dataset: Any, seed: int, views: int, dtype: str = "fp16",
                       shard_size: int = 4096, key_extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Everything the cached features depend on (the cache key is its sha256).

    Args:
        live: the live source whose forward pass is cached (its teacher's ``identity``/``precision`` and input
            pipeline: student mean/std, resize size, interpolation).
        dataset: the training dataset with its augmenting transform (``samples``, ``transform``, ``name``).
        seed: ``trainer.seed`` (the augmentation of ``(i, v)`` is drawn from ``mix_seed(seed, v, i)``).
        views: V, the number of augmented views per image.
        dtype: ``fp16`` | ``fp32`` storage.
        shard_size: images per shard file.
        key_extra: more JSON-able key parts.

    Returns:
        A JSON-able dict.

    Raises:
        PandError: a dataset without a ``samples`` list (nothing to key the cache on).
    """
    t = live.teacher
    size = live.size
    return {
        "format": FORMAT,
        "teacher_identity": str(t.identity),
        "embed_dim": int(live.embed_dim),
        "teacher_precision": str(getattr(t, "precision", "fp32")),
        "teacher_input": {
            "student_mean": list(live.student_mean), "student_std": list(live.student_std),
            "teacher_mean": [float(v) for v in t.mean], "teacher_std": [float(v) for v in t.std],
            "size": list(size) if isinstance(size, (tuple, list)) else size, "interpolation": live.interpolation,
        },
        **_dataset_fingerprint(dataset),
        "seed": int(seed),
        "views": int(views),
        "dtype": str(dtype),
        "shard_size": int(shard_size),
        "key_extra": {str(k): v for k, v in (key_extra or {}).items()},
    }


def teacher_cache_key(meta: Mapping[str, Any]) -> str:
    """sha256 of the cache metadata (sorted JSON), as :func:`pand.psc.features.feature_cache_key`."""
    from pand.psc.features import feature_cache_key

    return feature_cache_key(meta)


def teacher_cache_dir(cache_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    """``<cache_dir>/nsd_teacher/<key[:32]>``."""
    return Path(cache_dir) / CACHE_SUBDIR / teacher_cache_key(meta)[:32]


def _shard_path(root: Path, s: int) -> Path:
    return root / f"shard-{s:05d}.safetensors"


def _shard_ranges(n: int, shard_size: int) -> List[Tuple[int, int]]:
    return [(a, min(a + shard_size, n)) for a in range(0, n, shard_size)]


# --------------------------------------------------------------------------------------------------------------
# raw safetensors access (header + memory map)
# --------------------------------------------------------------------------------------------------------------
def _read_header(path: Path) -> Dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file shorter than a safetensors header")
        n = struct.unpack("<Q", raw)[0]
        if n > 100_000_000:
            raise ValueError(f"implausible safetensors header length {n}")
        header = json.loads(f.read(n))
    header["__header_len__"] = n
    return header


def _memmap(path: Path, header: Mapping[str, Any], name: str = "features"):
    """Read-only numpy memmap of tensor ``name``'s raw little-endian bytes (nothing is read until indexed)."""
    import numpy as np

    info = header[name]
    begin, _ = info["data_offsets"]
    return np.memmap(path, dtype=_NP_DTYPES[info["dtype"]], mode="r", offset=8 + int(header["__header_len__"]) + begin,
                     shape=tuple(int(s) for s in info["shape"]))


# shards whose checksum this process verified: (path, size, mtime_ns) -> sha256 (re-hashed when the file changes)
_VERIFIED: Dict[Tuple[str, int, int], str] = {}


def _shard_sha256(path: Path, header: Mapping[str, Any]) -> str:
    """sha256 of the shard's raw feature bytes (read in blocks through the memory map)."""
    import hashlib

    flat = _memmap(path, header).reshape(-1)
    h = hashlib.sha256()
    step = 1 << 22
    for a in range(0, flat.shape[0], step):
        h.update(flat[a:a + step].tobytes())
    return h.hexdigest()


def _valid_shard(path: Path, key: str, start: int, count: int, views: int, dim: int, dtype: str) -> bool:
    """Whether ``path`` is a complete, unaltered shard of this cache (header, metadata, shape, dtype, file size and
    the sha256 of its features)."""
    if not path.is_file():
        return False
    try:
        header = _read_header(path)
        meta = {k: json.loads(v) for k, v in (header.get("__metadata__") or {}).items()}
        info = header["features"]
        st = path.stat()
        size_ok = st.st_size >= 8 + header["__header_len__"] + int(info["data_offsets"][1])
        ok = (meta.get("key") == key and meta.get("start") == start and tuple(info["shape"]) == (count, views, dim)
              and info["dtype"] == ("F16" if dtype == "fp16" else "F32") and size_ok)
        if ok:
            stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns)
            if _VERIFIED.get(stamp) != meta.get("sha256"):
                digest = _shard_sha256(path, header)
                if digest != meta.get("sha256"):
                    warnings.warn(f"teacher cache shard {path} fails its checksum (changed after it was written); "
                                  f"recomputing it")
                    return False
                _VERIFIED[stamp] = digest
    except Exception as e:  # noqa: BLE001 - a damaged shard is recomputed, never trusted
        warnings.warn(f"teacher cache shard {path} is unreadable ({type(e).__name__}: {e}); recomputing it")
        return False
    if not ok:
        warnings.warn(f"teacher cache shard {path} does not match its key or shape; recomputing it")
    return ok


def _manifest_ok(root: Path, key: Optional[str]) -> bool:
    from pand.utils.io import read_json

    p = root / _MANIFEST
    try:
        m = read_json(p) if p.is_file() else {}
    except (OSError, ValueError):
        return False
    return (key is None or m.get("key") == key) and bool(m.get("complete"))


# --------------------------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------------------------
class _DecodeOnce:
    """``dataset[index]`` of a :class:`pand.data.FGVCDataset` that decodes each image once for its consecutive views.

    The build asks for ``(i, 0), (i, 1), ..., (i, V-1)`` in a row; the decoded RGB image of the last index is kept
    (one image per process / DataLoader worker) and every view transforms a copy of it
    (:meth:`pand.data.FGVCDataset.item_from_image`). Decoding draws no random numbers, so under
    :class:`~pand.nsd.data.IndexedDataset`'s ``mix_seed(seed, v, i)`` the transform of view ``v`` draws exactly what
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
    from pand.data.base import FGVCDataset

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
    from torch.utils.data import DataLoader

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
    from pand.utils.io import atomic_write_json

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
        from pand.utils.lock import LOCK_NAME, exclusive_lock

        if not missing() and _manifest_ok(root, key):  # every shard's checksum verified: reuse, no lock needed
            return root
        with exclusive_lock(root / LOCK_NAME, f"NSD teacher cache entry {root}",
                            "it is being built by that process: rerun when it has finished, or set cache_dir to "
                            "another folder"):
            todo = missing()  # again under the lock: another process may have finished it meanwhile
            if todo or not _manifest_ok(root, key):
                build(todo)
                atomic_write_json(root / _MANIFEST, manifest)
        return root
    return _build_distributed(root, key, manifest, missing, build, dist)


def _build_shards(live: LiveTeacher, indexed: IndexedDataset, root: Path, key: str,
                  todo: Sequence[Tuple[int, int, int]], views: int, dim: int, dtype: str, batch_size: int,
                  num_workers: int, progress: bool, rank: int) -> None:
    """Encode and write the shards ``todo`` = ``[(shard, start, end)]`` (each file atomically)."""
    from tqdm.auto import tqdm

    from pand.utils.io import save_tensors

    total = sum(b - a for _, a, b in todo) * views
    with torch.random.fork_rng(devices=[]), \
            tqdm(total=total, desc=f"nsd teacher cache ({views} views)", unit="view", disable=not progress,
                 leave=False, dynamic_ncols=True) as bar:
        for s, a, b in todo:
            feats = _encode_shard(live, indexed, a, b, views, batch_size, num_workers, bar).to(DTYPES[dtype])
            _check_finite(feats, indexed, a)
            save_tensors(_shard_path(root, s), {"features": feats},
                         {"key": key, "shard": s, "start": a, "count": b - a, "views": views, "embed_dim": dim,
                          "dtype": dtype, "rank": int(rank), "sha256": _tensor_sha256(feats)})


def _tensor_sha256(t: torch.Tensor) -> str:
    from pand.psc.features import tensor_sha256

    return tensor_sha256(t)


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
    import os

    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def _missing_after_wait(missing, wait_s: float = 10.0) -> List[int]:
    """Shards this rank cannot see, polled for up to ``wait_s`` (a shared filesystem may show new files late)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        gone = [s for s, _, _ in missing()]
        if not gone or time.monotonic() >= deadline:
            return gone
        time.sleep(1.0)


def _build_distributed(root: Path, key: str, manifest: Mapping[str, Any], missing, build, dist: Any) -> Path:
    """Every rank builds its share of the missing shards; the manifest is written once, after a barrier."""
    from pand.utils.distributed import all_gather_object, barrier
    from pand.utils.io import atomic_write_json

    if all(all_gather_object(_manifest_ok(root, key), dist)):
        return root
    todo = all_gather_object(missing() if dist.is_main else None, dist)[0]  # rank 0's view, dealt round-robin
    build(todo[dist.rank::dist.world_size], dist.rank)
    barrier(dist)
    unseen = all_gather_object(_missing_after_wait(missing), dist)
    if not any(unseen):  # one shared directory: rank 0 writes the one manifest
        if dist.is_main:
            atomic_write_json(root / _MANIFEST, dict(manifest))
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
        atomic_write_json(root / _MANIFEST, dict(manifest))
    barrier(dist)
    return root


# --------------------------------------------------------------------------------------------------------------
# read
# --------------------------------------------------------------------------------------------------------------
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
        from pand.utils.io import read_json

        self.root = Path(root)
        if not _manifest_ok(self.root, None):
            raise ArtifactError(f"{self.root} is not a complete NSD teacher cache (no complete manifest.json); delete "
                                f"it and rebuild (it is rebuilt automatically when nsd.teacher_cache.views > 0)")
        m = read_json(self.root / _MANIFEST)
        self.key, self.count, self.views = str(m["key"]), int(m["count"]), int(m["views"])
        self.embed_dim, self.shard_size, self.dtype = int(m["embed_dim"]), int(m["shard_size"]), str(m["dtype"])
        self.shards = []
        for s, (a, b) in enumerate(_shard_ranges(self.count, self.shard_size)):
            path = _shard_path(self.root, s)
            if not _valid_shard(path, self.key, a, b - a, self.views, self.embed_dim, self.dtype):
                raise ArtifactError(f"teacher cache shard {path} is missing or does not match {self.root / _MANIFEST}; "
                                    f"delete {self.root} and rebuild")
            self.shards.append(_memmap(path, _read_header(path)))

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
        import numpy as np

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
    """A :class:`~pand.nsd.teacher_source.TeacherSource` that reads cached features instead of running the teacher.

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
        from pand.utils.io import read_json

        self.cache = cache if isinstance(cache, TeacherFeatureCache) else TeacherFeatureCache(cache)
        self.embed_dim = self.cache.embed_dim
        self.num_views = self.cache.views
        self.seed = int(read_json(self.cache.root / _MANIFEST)["seed"] if seed is None else seed)
        self.epoch: Optional[int] = None
        self._table: Tuple[int, Any] = (-1, None)

    def views(self, epoch: int, count: int):
        """``[count]`` views of every image in ``epoch`` (:func:`pand.nsd.data.replay_views`).

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


def maybe_cache_teacher(cfg: Any, source: Any, dataset: Any, dist: Any = None, progress: bool = True,
                        views: Optional[int] = None) -> Any:
    """The engine's hook: swap a :class:`LiveTeacher` for a :class:`CachedTeacher` when ``nsd.teacher_cache.views > 0``
    (or when ``auto`` projects the cache to pay off: :mod:`pand.nsd.teacher_cache_auto`).

    Every rank builds its share of the cache under ``<cache_dir>/nsd_teacher/`` (or reuses it; see
    :func:`build_teacher_cache`) and then opens it read-only. Returns ``source`` unchanged when the cache is off, there is no teacher, or ``source`` is
    already cached.

    Args:
        cfg: run configuration (``nsd.teacher_cache``, ``trainer.seed``, ``trainer.num_workers``,
            ``teacher.batch_size``, ``cache_dir``).
        source: the teacher source the caller built.
        dataset: the training dataset (augmenting transform attached) the train loader wraps.
        dist: :class:`pand.utils.distributed.DistInfo` (default: one process).
        progress: tqdm bar on rank 0.
        views: the views to cache, already resolved (the engine resolves ``auto`` itself to record the choice);
            None: ``nsd.teacher_cache.views``, with ``auto`` measured and decided here.

    Raises:
        ConfigError: ``nsd.teacher_cache.views`` is neither an int >= 0 nor ``auto``.
        PandError: a cache is asked for but ``source`` is neither live nor cached.
    """
    from pand.config import ConfigError
    from pand.utils.distributed import DistInfo

    tc = cfg.nsd.teacher_cache
    if views is None:
        if tc.views == "auto":
            from .teacher_cache_auto import resolve_views

            views = 0 if source is None or isinstance(source, CachedTeacher) else \
                resolve_views(cfg, source, dataset, dist)[0]
        else:
            views = tc.views
    if isinstance(views, bool) or not isinstance(views, int) or views < 0:
        raise ConfigError(f"nsd.teacher_cache.views={views!r} must be an int >= 0 (0 = live teacher, 8-16 "
                          f"recommended) or 'auto'")
    if source is None or views <= 0 or isinstance(source, CachedTeacher):
        return source
    if not isinstance(source, LiveTeacher):
        raise PandError(f"nsd.teacher_cache.views={views} caches a LiveTeacher, got {type(source).__name__}; set "
                        f"nsd.teacher_cache.views=0 to use this source as it is")
    dist = dist or DistInfo()
    kw = dict(seed=int(cfg.trainer.seed), views=views, shard_size=int(tc.shard_size),
              dtype=str(tc.get("dtype", "fp16")))
    root = build_teacher_cache(source, dataset, cfg.cache_dir, batch_size=int(cfg.teacher.get("batch_size", 64)),
                               num_workers=int(cfg.trainer.num_workers), progress=progress and dist.is_main,
                               dist=dist, **kw)
    return CachedTeacher(root)
