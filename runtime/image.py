"""Decode any PIL image to 8-bit RGB with the right scaling (numpy + PIL only; training decodes with it too).

PIL's own ``convert("RGB")`` clips 16-bit and 32-bit integer greyscale (modes ``I;16``, ``I;16B``, ``I;16L``,
``I;16N`` and ``I``, e.g. 16-bit PNGs) at 255, so such an image becomes solid white. :func:`to_rgb` scales
those modes from the 16-bit range to 8 bits first (``round(v / 257)``: 0 -> 0, 65535 -> 255, exact on values that
are multiples of 257); ``I`` values outside ``0..65535`` are clipped. Every other mode goes through
``convert("RGB")`` unchanged, so 8-bit images decode exactly as before.
"""
from __future__ import annotations

from typing import Any

__all__ = ["WIDE_INT_MODES", "to_rgb"]

WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(im: Any):
    """``im`` (a PIL image of any mode) as a new 8-bit ``RGB`` PIL image."""
    if im.mode not in WIDE_INT_MODES:
        return im.convert("RGB")
    import numpy as np
    from PIL import Image

    wide = np.asarray(im).astype(np.int64)
    u8 = ((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8)
    return Image.fromarray(u8, "L").convert("RGB")
