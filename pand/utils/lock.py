"""Exclusive, non-blocking file locks: one writer per run directory and per cache entry being built.

``exclusive_lock(path)`` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``path`` (created when missing) and writes the
holder's pid into it. A second process asking for the same lock is refused at once with a :class:`LockedError`
naming the holder's pid; nothing waits. The kernel drops the lock when the holder exits, however it exits
(SIGKILL included), so a stale lock file never blocks a later run: only a live process holds the lock. The file is
left in place after release (deleting it would let two processes lock two different files of the same name).

Locks are advisory and per host: processes on other machines sharing the directory over NFS are not excluded
reliably. On platforms without ``fcntl`` (Windows) the lock is a no-op.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from pand.errors import PandError

__all__ = ["LOCK_NAME", "LockedError", "exclusive_lock", "lock_holder"]

LOCK_NAME = ".pand.lock"


class LockedError(PandError):
    """Another live process holds the lock."""


def lock_holder(path: str | os.PathLike) -> Optional[int]:
    """The pid written in lock file ``path`` (None when absent or unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, fix: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` for the duration of the ``with`` block.

    Args:
        path: the lock file (its parent directory is created).
        what: what the lock protects, for messages (e.g. ``"run directory runs/tiny"``).
        fix: what the user should do when it is held (e.g. ``"wait for it to finish or choose another --run-dir"``).

    Raises:
        LockedError: another process holds it (names its pid and the lock file).
        PandError: the lock file cannot be created (read-only or missing permissions), naming the directory.
    """
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        yield path
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise PandError(
            f"cannot write to {path.parent} ({e.strerror or type(e).__name__}), needed for the {what}. Make it "
            f"writable or choose another location."
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            pid = lock_holder(path)
            who = f"process {pid}" if pid is not None else "another process"
            raise LockedError(f"the {what} is in use by {who} (lock {path}); {fix}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield path
        finally:
            try:
                os.ftruncate(fd, 0)
            except OSError:  # pragma: no cover - best effort on a disk that became read-only
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
