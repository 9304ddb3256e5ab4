"""Allowed ranges of numeric settings, checked when a configuration is loaded (:func:`pand.config.load_config`).

Each entry ``key: (low, low_open, high, high_open)``: the value must be a finite number in that interval (``None``
= unbounded on that side, ``*_open`` = the bound itself excluded). A null value (an optional setting left unset) is
not checked. Integer lower bounds of counts live in :data:`pand.config.schema.MINIMUMS`; these are the real-valued
settings (and the counts whose bad value would only fail deep inside a stage).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Tuple

__all__ = ["RANGES", "describe_range", "out_of_range"]

Range = Tuple[Optional[float], bool, Optional[float], bool]

_POS: Range = (0.0, True, None, False)  # > 0
_NONNEG: Range = (0.0, False, None, False)  # >= 0
_UNIT: Range = (0.0, False, 1.0, False)  # [0, 1]

RANGES: Mapping[str, Range] = {
    "data.val_fraction": (0.0, False, 1.0, True),
    "psc.lr": _POS, "psc.momentum": _UNIT, "psc.weight_decay": _NONNEG, "psc.grad_clip": _NONNEG,
    "psc.patience": _NONNEG,
    "nsd.lr": _POS, "nsd.momentum": _UNIT, "nsd.weight_decay": _NONNEG, "nsd.eta_min": _NONNEG,
    "nsd.step_size": (1.0, False, None, False), "nsd.gamma": (0.0, True, 1.0, False),
    "nsd.temperature": _POS, "nsd.logit_scale": _POS, "nsd.grad_clip": _NONNEG, "nsd.ce_ramp": _POS,
    "nsd.ce_weight": _UNIT, "nsd.nlrd.k": (1.0, False, None, False), "nsd.nlrd.weight": _NONNEG,
    "nsd.nlrd.lam": _NONNEG,
    "promptkd.lr": _POS, "promptkd.momentum": _UNIT, "promptkd.weight_decay": _NONNEG,
    "promptkd.warmup_lr": _NONNEG, "promptkd.temperature": _POS, "promptkd.kd_weight": _POS,
    "promptkd.logit_scale": _POS, "promptkd.epochs": (1.0, False, None, False),
    "promptkd.batch_size": (1.0, False, None, False), "promptkd.eval_batch_size": (1.0, False, None, False),
    "promptkd.promptsrc.lr": _POS, "promptkd.promptsrc.momentum": _UNIT,
    "promptkd.promptsrc.weight_decay": _NONNEG, "promptkd.promptsrc.warmup_lr": _NONNEG,
    "promptkd.promptsrc.epochs": (1.0, False, None, False), "promptkd.promptsrc.batch_size": (1.0, False, None, False),
    "student.image_size": (1.0, False, None, False),
}


def describe_range(r: Range) -> str:
    """``"> 0"``, ``"in [0, 1]"``, ``">= 1"``, ... for a message."""
    low, low_open, high, high_open = r
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def out_of_range(value: Any, r: Range) -> bool:
    """Whether ``value`` (a number; bools and non-numbers count as out of range) is not a finite number in ``r``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    v = float(value)
    if not math.isfinite(v):
        return True
    low, low_open, high, high_open = r
    if low is not None and (v < low or (low_open and v == low)):
        return True
    return high is not None and (v > high or (high_open and v == high))
