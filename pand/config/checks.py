"""What a setting may hold, declared on its schema field and checked once when a configuration is loaded.

A field of the schema (:mod:`pand.config.schema`) declared with :func:`choice`, :func:`count` or :func:`number`
carries a :class:`Check` in its dataclass metadata (OmegaConf reads only the default). :func:`schema_checks` walks the
schema into ``{dotted key: Check}``, and :func:`pand.config.loader.load_config` tests every set value against it
after the merge, when OmegaConf has already refused unknown keys and wrong types. A null value (an optional setting
left unset) passes, except where a field typed ``Any`` says otherwise (``null=False``). The error names the key, the bad value and what is allowed::

    bad value for 'nsd.optimizer': nsd.optimizer='lion'. Valid choices: sgd, adamw
    bad value for 'promptkd.epochs': promptkd.epochs=0. Allowed: an integer >= 1
    bad value for 'nsd.lr': nsd.lr=-1.0. Allowed: a finite number > 0
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional, Tuple

__all__ = ["CHECK", "Check", "Range", "POS", "NONNEG", "UNIT", "choice", "count", "number", "schema_checks"]

#: the dataclass-metadata key that holds a field's :class:`Check`
CHECK = "pand_check"

#: ``(low, low_open, high, high_open)``: ``None`` = unbounded on that side, ``*_open`` = the bound itself excluded
Range = Tuple[Optional[float], bool, Optional[float], bool]
POS: Range = (0.0, True, None, False)  # > 0
NONNEG: Range = (0.0, False, None, False)  # >= 0
UNIT: Range = (0.0, False, 1.0, False)  # [0, 1]


def _describe(r: Range) -> str:
    """``"> 0"``, ``"in [0, 1]"``, ``">= 1"``, ... for a message."""
    low, low_open, high, high_open = r
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _outside(v: float, r: Range) -> bool:
    low, low_open, high, high_open = r
    if low is not None and (v < low or (low_open and v == low)):
        return True
    return high is not None and (v > high or (high_open and v == high))


@dataclass(frozen=True)
class Check:
    """The values one setting may hold: one of ``choices``, or a number in ``range`` (an integer when ``integer``;
    the words in ``words`` are accepted beside it, e.g. ``nsd.teacher_cache.views = auto``). ``null``: whether
    null passes (OmegaConf already refuses null for a field not typed ``Optional``; this is for ``Any`` fields)."""

    choices: Tuple[Any, ...] = ()
    range: Optional[Range] = None
    integer: bool = False
    words: Tuple[str, ...] = ()
    null: bool = True

    def allowed(self) -> str:
        """What the setting takes, for a message: ``"Valid choices: a, b"`` or ``"Allowed: an integer >= 1"``."""
        if self.choices:
            return "Valid choices: " + ", ".join(map(str, self.choices))
        what = "an integer" if self.integer else "a finite number"
        text = f"{what} {_describe(self.range)}" if self.range is not None else what
        return "Allowed: " + text + "".join(f" or {w!r}" for w in self.words)

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` passes (bools are never numbers here)."""
        if value is None:
            return self.null
        if self.choices:
            return value in self.choices
        if isinstance(value, str) and value in self.words:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        v = float(value)
        return math.isfinite(v) and (self.range is None or not _outside(v, self.range))


def _field(default: Any, check: Check) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={CHECK: check})
    return field(default=default, metadata={CHECK: check})


def choice(default: Any, choices: Iterable[Any]) -> Any:
    """A schema field whose value must be one of ``choices`` (the owner's own table) or null."""
    return _field(default, Check(choices=tuple(choices)))


def count(default: Any, low: int = 1, words: Iterable[str] = (), null: bool = True) -> Any:
    """A schema field holding an integer ``>= low`` (an epoch, step, batch or item count) or one of ``words``."""
    return _field(default, Check(range=(float(low), False, None, False), integer=True, words=tuple(words), null=null))


def number(default: Any, r: Range) -> Any:
    """A schema field holding a finite number in ``r``."""
    return _field(default, Check(range=r))


def schema_checks(cls: type, prefix: str = "") -> Dict[str, Check]:
    """``{dotted key: Check}`` of every checked field of the dataclass ``cls`` and the dataclasses it nests."""
    out: Dict[str, Check] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if CHECK in f.metadata:
            out[key] = f.metadata[CHECK]
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(schema_checks(hints[f.name], key + "."))
    return out
