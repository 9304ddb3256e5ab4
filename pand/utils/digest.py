"""Content digests of files: what the caches are keyed on, so that a key changes whenever the bytes change.

:func:`file_digest` is the BLAKE2b-128 (``hashlib.blake2b``, stdlib) of a file's bytes. It is memoised per process
on ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``: a file whose bytes change gets a new ``ctime`` (the
kernel sets it on every write, rename or ``utime`` and it cannot be set back by ``cp -p``, ``rsync -a`` or an archive
with fixed times), so it is read again; an unchanged file is read once per process.

:func:`files_digest` combines the digests of a list of files, in order, into one hex string.

The digests the feature caches (Stage PSC, the NSD teacher cache) and PromptKD's checkpoints are keyed on live here
too: a dataset's sample list (:func:`samples_hash`) and file contents (:func:`content_hash`), a transform's stable
description (:func:`describe_transform`), raw tensor bytes (:func:`tensor_sha256`) and a metadata mapping
(:func:`mapping_sha256`, sorted JSON).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from pand.errors import PandError
from pand.utils.io import sha256_bytes

__all__ = ["file_digest", "files_digest", "clear_digest_memo", "describe_transform", "samples_hash", "content_hash",
           "stat_hash", "tensor_sha256", "mapping_sha256"]

_CHUNK = 1 << 20
_MEMO: Dict[Tuple[int, int, int, int, int], str] = {}
_LOCK = threading.Lock()


def _stat_key(st: os.stat_result) -> Tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: str | os.PathLike) -> str:
    """Hex BLAKE2b-128 of the bytes of ``path`` (symlinks followed), memoised on its stat key.

    Raises:
        OSError: the file cannot be read.
    """
    key = _stat_key(os.stat(path))
    with _LOCK:
        hit = _MEMO.get(key)
    if hit is not None:
        return hit
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
        after = _stat_key(os.fstat(f.fileno()))
    digest = h.hexdigest()
    if after == key:  # not changed while it was read: safe to remember
        with _LOCK:
            _MEMO[key] = digest
    return digest


def files_digest(paths: Iterable[str | os.PathLike]) -> str:
    """Hex BLAKE2b-256 over ``file_digest`` of every path in order; a missing or unreadable file contributes a
    marker (the dataset checks existence elsewhere)."""
    h = hashlib.blake2b(digest_size=32)
    for p in paths:
        d: Optional[str]
        try:
            d = file_digest(p)
        except OSError:
            d = None
        h.update((d or "-").encode("ascii") + b"\n")
    return h.hexdigest()


def clear_digest_memo() -> None:
    """Forget every memoised digest (tests)."""
    with _LOCK:
        _MEMO.clear()


_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")


def describe_transform(transform: Any) -> str:
    """A stable text description of a transform: its ``repr`` without memory addresses (``<function f at 0x..>``)."""
    return _ADDR.sub("", repr(transform))


def samples_hash(dataset: Any) -> str:
    """sha256 of the dataset's ``(path, label)`` list in order (``dataset.samples``)."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise PandError(f"cannot cache features of {type(dataset).__name__}: it has no 'samples' list of (path, label)")
    return sha256_bytes(json.dumps([[str(p), int(y)] for p, y in samples]).encode("utf-8"))


def content_hash(dataset: Any) -> str:
    """Digest of the *bytes* of every sample file, in order (:func:`pand.utils.digest.files_digest`): changes
    whenever an image's content changes, also when its modification time is restored (``cp -p``, ``rsync -a``,
    an archive with fixed times), and not when a file is only touched.

    A missing file contributes a marker (the dataset checks existence elsewhere).
    """
    return files_digest(p for p, _ in getattr(dataset, "samples", None) or [])


def stat_hash(dataset: Any) -> str:
    """The fingerprint of pand <= 0.1.0 (sha256 of every file's ``(size, mtime_ns)``): only to recognise a PSC
    artifact written then, for a resumed run. Never a cache key."""
    stats = []
    for p, _ in getattr(dataset, "samples", None) or []:
        try:
            st = os.stat(p)
            stats.append([st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append(None)
    return sha256_bytes(json.dumps(stats).encode("utf-8"))


def tensor_sha256(*tensors: Any) -> str:
    """sha256 of the raw bytes of ``tensors`` (CPU, contiguous), in order."""
    import torch  # only here: the rest of this module (the data layer's digests) needs no torch

    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def mapping_sha256(meta: Mapping[str, Any]) -> str:
    """sha256 of a metadata mapping as sorted JSON (values JSON cannot hold as their ``str``): a cache key."""
    return sha256_bytes(json.dumps(dict(meta), sort_keys=True, default=str).encode("utf-8"))
