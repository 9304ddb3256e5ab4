"""Atomic writes and hashing, shared by the runtime and the training side (torch-free).

Every file pand writes goes to a temporary file in the same directory and is then renamed over
the target (``os.replace``), so a crash, an interrupt or a full disk never leaves a half-written file
that a later run could read back. The temporary files and staging folders get the mode the umask gives any new
file (0644 / 0755 under umask 022), not ``mkstemp``'s 0600.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import PandError

__all__ = [
    "WriteError", "is_write_failure", "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "sha256_file",
    "sha256_bytes", "read_json", "current_umask", "apply_umask", "make_staging_dir",
]


class WriteError(PandError):
    """A file could not be written (full disk, read-only or missing directory, no permission)."""

    @classmethod
    def of(cls, path: str | os.PathLike, err: BaseException) -> "WriteError":
        code = getattr(err, "errno", None)
        if code == errno.ENOSPC or "iostream" in str(err) or "No space" in str(err):
            why = "the disk is full"
        elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
            why = "the location is read-only or not writable"
        else:
            why = "the write failed"
        detail = getattr(err, "strerror", None) or str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        out = cls(
            f"could not write {path}: {why} ({type(err).__name__}: {detail}). The partial file was removed and any "
            f"earlier version is intact. Free disk space or make {Path(path).parent} writable (or choose another "
            f"--run-dir / cache_dir), then rerun (pand-train ... --resume continues a run)."
        )
        out.path, out.reason = Path(path), f"{why} ({type(err).__name__}: {detail})"
        return out


def is_write_failure(err: BaseException) -> bool:
    """Whether ``err`` (raised while writing a file) is an I/O failure rather than a bug in the caller.

    OSError (ENOSPC, EROFS, EACCES, ...), safetensors' ``SafetensorError`` and torch's ``basic_ios::clear:
    iostream error`` RuntimeError (what ``torch.save`` raises on a full disk).
    """
    if isinstance(err, PandError):
        return False
    if isinstance(err, OSError):
        return True
    if type(err).__name__ == "SafetensorError":
        return True
    return isinstance(err, RuntimeError) and any(s in str(err) for s in ("iostream", "No space", "write", "file"))


def current_umask() -> int:
    """The process's file-mode creation mask (read from ``/proc/self/status`` where possible, else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would: ``0o666 & ~umask`` (folders ``0o777 & ~umask``).

    ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700 whatever the umask; a file renamed into place from there would
    stay unreadable for other users (a bundle copied to a device and run by a service user). Under umask 022 this
    gives 0644 files and 0755 folders.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def make_staging_dir(parent: str | os.PathLike, name: str) -> Path:
    """A fresh hidden staging folder ``parent/.<name>.tmp-<random suffix>`` with the umask's mode (see
    :func:`apply_umask`), to be filled and renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    apply_umask(tmp, directory=True)
    return tmp


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The parent directory is created. On any exception the temporary file is removed and the
    target is left untouched; an I/O failure (full disk, read-only directory) becomes a :class:`WriteError`
    naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise WriteError.of(path, e) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            apply_umask(tmp_path)  # mkstemp makes 0600 (and some writers recreate the file): the umask's mode instead
            os.replace(tmp_path, path)
        except Exception as e:  # noqa: BLE001 - re-raised as is unless it is an I/O failure
            if is_write_failure(e):
                raise WriteError.of(path, e) from None
            raise
    finally:
        try:
            tmp_path.unlink()
        except FileNotFoundError:
            pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
