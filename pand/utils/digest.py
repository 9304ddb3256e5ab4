"""Content digests of files: what the caches are keyed on, so that a key changes whenever the bytes change.

:func:`file_digest` is the BLAKE2b-128 (``hashlib.blake2b``, stdlib) of a file's bytes. It is memoised per process
on ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``: a file whose bytes change gets a new ``ctime`` (the
kernel sets it on every write, rename or ``utime`` and it cannot be set back by ``cp -p``, ``rsync -a`` or an archive
with fixed times), so it is read again; an unchanged file is read once per process.

:func:`files_digest` combines the digests of a list of files, in order, into one hex string.
"""
from __future__ import annotations

import hashlib
import os
import threading
from typing import Dict, Iterable, Optional, Tuple

__all__ = ["file_digest", "files_digest", "clear_digest_memo"]

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
