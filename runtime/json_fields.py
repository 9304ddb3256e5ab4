"""Typed reads of the fields of a parsed JSON object, each failure an :class:`ArtifactError` naming the field.

Shared by the bundle manifest (:mod:`.manifest`) and the preprocessing spec it embeds (:mod:`.preprocess_spec`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from .errors import ArtifactError

__all__ = ["require", "bad_type", "get_int", "get_str", "get_list", "as_dict"]


def require(d: Dict[str, Any], keys: Sequence[str], what: str) -> None:
    """Refuse ``d`` unless it holds every key of ``keys``."""
    missing = [k for k in keys if k not in d]
    if missing:
        raise ArtifactError(f"{what} lacks the field(s) {', '.join(missing)}; re-export the bundle with pand-export")


def bad_type(what: str, key: str, want: str, value: Any) -> ArtifactError:
    """The error for field ``key`` of ``what`` holding ``value`` instead of ``want``."""
    return ArtifactError(f"{what}: field '{key}' must be {want}, got {type(value).__name__} {value!r:.60}; the "
                         f"manifest was edited by hand or is damaged: re-export the bundle with pand-export")


def get_int(d: Dict[str, Any], key: str, what: str) -> int:
    """``d[key]`` if it is an integer (not a bool)."""
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_type(what, key, "an integer", v)
    return v


def get_str(d: Dict[str, Any], key: str, what: str) -> str:
    """``d[key]`` if it is a string."""
    v = d[key]
    if not isinstance(v, str):
        raise bad_type(what, key, "a string", v)
    return v


def get_list(d: Dict[str, Any], key: str, what: str, item: type, want: str) -> List[Any]:
    """``d[key]`` if it is a list whose items are all ``item`` (bools never count as numbers)."""
    v = d[key]
    if not isinstance(v, list) or not all(isinstance(x, item) and not isinstance(x, bool) for x in v):
        raise bad_type(what, key, want, v)
    return v


def as_dict(value: Any, what: str) -> Dict[str, Any]:
    """``value`` if it is a JSON object."""
    if not isinstance(value, dict):
        raise ArtifactError(f"{what} must be a JSON object, got {type(value).__name__} {value!r:.60}; re-export the "
                            f"bundle with pand-export")
    return value
