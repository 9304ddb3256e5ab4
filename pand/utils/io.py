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
    "WriteError", "is_write_failure", "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "sha256_file",
    "sha256_bytes", "save_tensors", "load_tensors", "read_json", "current_umask", "apply_umask", "make_staging_dir",
]


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Atomically write torch tensors as safetensors; ``metadata`` values are JSON-encoded strings."""
    from safetensors.torch import save_file

    meta = {str(k): json.dumps(v, default=str) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


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
