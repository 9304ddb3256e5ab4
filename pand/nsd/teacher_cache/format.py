"""The on-disk format of the NSD teacher-feature cache: its key, its directory, and reading and checking shards.

A cache entry is ``<cache_dir>/nsd_teacher/<key[:32]>/``: ``shard-00000.safetensors`` ... (one tensor ``features``
``[n_s, V, D_t]`` per shard, fp16 or fp32, with the key, the first image, the view count and the sha256 of the
feature bytes in its metadata) and ``manifest.json``, written last. The key is the sha256 of
:func:`teacher_cache_meta` (teacher, teacher input pipeline, dataset samples and file contents, training transform,
seed, views, dtype, shard size). Shards are read through a numpy memory map of the raw tensor region, so only the
rows asked for are read.
"""
from __future__ import annotations

import hashlib
import json
import struct
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from pand.errors import PandError
from pand.models.teacher_source import LiveTeacher
from pand.utils.digest import content_hash, describe_transform, mapping_sha256, samples_hash
from pand.utils.io import read_json


__all__ = [
    "CACHE_SUBDIR", "FORMAT", "DTYPES", "RECOMMENDED_VIEWS", "AUTO", "MANIFEST", "teacher_cache_meta",
    "teacher_cache_key", "teacher_cache_dir",
]

CACHE_SUBDIR = "nsd_teacher"
FORMAT = "pand-nsd-teacher-cache-v1"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
RECOMMENDED_VIEWS = (8, 16)
AUTO = "auto"  # nsd.teacher_cache.views=auto: decided per run by pand.nsd.teacher_cache_auto
MANIFEST = "manifest.json"
_NP_DTYPES = {"F16": "<f2", "F32": "<f4"}


def _dataset_fingerprint(dataset: Any) -> Dict[str, Any]:
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
            pipeline: student mean/std and the teacher ``preprocess_spec``'s mean/std, size, interpolation).
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
        "teacher_precision": str(t.precision),
        "teacher_input": {
            "student_mean": list(live.student_mean), "student_std": list(live.student_std),
            "teacher_mean": list(live.teacher_mean), "teacher_std": list(live.teacher_std),
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
    """sha256 of the cache metadata (sorted JSON, :func:`pand.utils.digest.mapping_sha256`), as the PSC cache's."""
    return mapping_sha256(meta)


def teacher_cache_dir(cache_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    """``<cache_dir>/nsd_teacher/<key[:32]>``."""
    return Path(cache_dir) / CACHE_SUBDIR / teacher_cache_key(meta)[:32]


def _shard_path(root: Path, s: int) -> Path:
    return root / f"shard-{s:05d}.safetensors"


def _shard_ranges(n: int, shard_size: int) -> List[Tuple[int, int]]:
    return [(a, min(a + shard_size, n)) for a in range(0, n, shard_size)]


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
    info = header[name]
    begin, _ = info["data_offsets"]
    return np.memmap(path, dtype=_NP_DTYPES[info["dtype"]], mode="r", offset=8 + int(header["__header_len__"]) + begin,
                     shape=tuple(int(s) for s in info["shape"]))


# shards whose checksum this process verified: (path, inode, size, mtime_ns, ctime_ns) -> sha256 (re-hashed when
# the file changes; ctime changes on every write even when the mtime is restored)
_VERIFIED: Dict[Tuple[str, int, int, int, int], str] = {}


def _shard_sha256(path: Path, header: Mapping[str, Any]) -> str:
    """sha256 of the shard's raw feature bytes (read in blocks through the memory map)."""
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
            stamp = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
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
    """Whether ``root`` holds a complete manifest (of cache ``key``; any key when None)."""
    p = root / MANIFEST
    try:
        m = read_json(p) if p.is_file() else {}
    except (OSError, ValueError):
        return False
    return (key is None or m.get("key") == key) and bool(m.get("complete"))
