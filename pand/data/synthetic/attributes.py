"""The attribute vocabulary of the synthetic birds: the values each class attribute can take, in id order.

A config uses the first ``num_body_colors`` colours, ``num_wing_patterns`` patterns, ... of these lists
(:class:`pand.data.synthetic.settings.SyntheticCfg`); the class set is their cartesian product
(:mod:`pand.data.synthetic.classes`).
"""
from __future__ import annotations

from typing import Tuple

__all__ = ["BODY_COLORS", "WING_PATTERNS", "BEAK_SHAPES", "CRESTS", "AXES"]

BODY_COLORS: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ("red", (212, 30, 36)),
    ("blue", (30, 78, 222)),
    ("yellow", (240, 208, 24)),
    ("green", (34, 156, 52)),
    ("purple", (132, 44, 184)),
    ("orange", (246, 128, 20)),
    ("pink", (240, 84, 168)),
    ("cyan", (24, 192, 212)),
)
WING_PATTERNS = ("plain", "striped", "spotted", "checkered")
BEAK_SHAPES = ("hooked", "straight", "conical")
CRESTS = ("no crest", "crested")
AXES = ("body_color", "wing_pattern", "beak_shape", "crest")
