"""Dotted keys of a nested configuration: one flattening for the resume check (:mod:`pand.engine.checkpoint`) and
the multi-node fingerprint (:mod:`pand.utils.distributed`).

Example:
    >>> flatten_config({"nsd": {"lr": 0.1, "betas": [0.9, 0.99]}, "name": "tiny"})
    {'nsd.lr': 0.1, 'nsd.betas': [0.9, 0.99], 'name': 'tiny'}
    >>> key_under("trainer.num_workers", ["trainer.num_workers", "data.root"])
    True
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

__all__ = ["flatten_config", "key_under"]


def flatten_config(node: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a.b.c": value}`` of a nested mapping (lists kept as values; an empty mapping contributes no key)."""
    out: Dict[str, Any] = {}
    if isinstance(node, Mapping):
        for k, v in node.items():
            out.update(flatten_config(v, f"{prefix}{k}."))
        return out
    out[prefix[:-1]] = node
    return out


def key_under(key: str, prefixes: Iterable[str]) -> bool:
    """Whether dotted ``key`` is one of ``prefixes`` or lies under one (``"a.b"`` is under ``"a"``, not under
    ``"a.b.c"`` nor ``"a.bc"``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)
