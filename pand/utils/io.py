"""Safe tensor files, plus the atomic writes and hashing of :mod:`pand_runtime.io` (re-exported here).

Tensors are stored as safetensors; pickles are never loaded. Every file goes through
:func:`pand_runtime.io.atomic_path`: a temporary file in the same directory renamed over the target.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional

from pand_runtime.io import (WriteError, apply_umask, atomic_path, atomic_write_bytes, atomic_write_json,
                             atomic_write_text, current_umask, is_write_failure, make_staging_dir, read_json, sha256_bytes,
                             sha256_file)

__all__ = [
    "WriteError", "is_write_failure", "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
    "sha256_file", "sha256_bytes", "save_tensors", "canonical_safetensors_header", "load_tensors", "read_json",
    "current_umask", "apply_umask", "make_staging_dir",
]


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Atomically write torch tensors as safetensors; ``metadata`` values are JSON-encoded strings."""
    from safetensors.torch import save_file

    meta = {str(k): json.dumps(v, default=str) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        canonical_safetensors_header(tmp)


def canonical_safetensors_header(path: str | os.PathLike) -> bool:
    """Rewrite, in place, the JSON header of the safetensors file ``path`` with its ``__metadata__`` keys sorted.

    safetensors keeps the metadata in a hash map, so the same tensors and metadata are written in a different key
    order by each process: the file's sha256 (the teacher's identity, a bundle's ``source.sha256``) would change
    from run to run with bit-identical contents. Sorting the keys makes equal contents give equal bytes. The header
    keeps its length (the same keys and values in another order, in safetensors' compact JSON), so the tensor data
    does not move; if the re-encoded header would differ in length (an encoding this function does not reproduce),
    the file is left as it is and False is returned.
    """
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
        header = json.loads(raw)
        meta = header.get("__metadata__")
        if not meta:
            return True
        header["__metadata__"] = {k: meta[k] for k in sorted(meta)}
        out = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        out += b" " * (len(raw) - len(out))  # safetensors pads the header with spaces to an 8-byte boundary
        if len(out) != len(raw):
            return False
        f.seek(8)
        f.write(out)
    return True


def load_tensors(path: str | os.PathLike, device: str = "cpu") -> tuple[Dict[str, Any], Dict[str, Any]]:
    """Read a safetensors file written by :func:`save_tensors`: ``(tensors, metadata)``."""
    from safetensors import safe_open

    tensors, meta = {}, {}
    with safe_open(str(path), framework="pt", device=device) as f:
        for k, v in (f.metadata() or {}).items():
            try:
                meta[k] = json.loads(v)
            except json.JSONDecodeError:
                meta[k] = v
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return tensors, meta
