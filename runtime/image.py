"""Decode any PIL image to 8-bit RGB with the right scaling (numpy + PIL only; training decodes with it too).

PIL's own ``convert("RGB")`` clips 16-bit and 32-bit integer greyscale (modes ``I;16``, ``I;16B``, ``I;16L``,
``I;16N`` and ``I``, e.g. 16-bit PNGs) at 255, so such an image becomes solid white, and truncates 32-bit float
greyscale (mode ``F``, e.g. a float TIFF with values 0..1) to 0 or 1, so it becomes black. :func:`to_rgb`:

* ``I;16*``: scaled from the 16-bit range to 8 bits (``round(v / 257)``: 0 -> 0, 65535 -> 255, exact on values that
  are multiples of 257);
* ``I`` (32-bit integer): values in ``0..65535`` are scaled as 16-bit (how PIL opens many 16-bit files); a value
  outside that range (negative, or a real 32-bit range) is refused: no scale is known, and clipping would be white;
* ``F`` (32-bit float): by its real range: values in ``0..1`` -> ``round(v * 255)``, else in ``0..255`` ->
  ``round(v)``, else in ``0..65535`` -> ``round(v / 257)``; NaN/inf or values outside ``0..65535`` are refused.

A refusal is a ``ValueError`` naming the mode and the value range; the callers name the file
(:func:`pand_runtime.preprocess.load_image`, :meth:`pand.data.FGVCDataset.load_image`). Every other mode goes
through ``convert("RGB")`` unchanged, so 8-bit images decode exactly as before.
"""
from __future__ import annotations

from typing import Any

__all__ = ["WIDE_INT_MODES", "FLOAT_MODES", "to_rgb"]

WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
FLOAT_MODES = ("F",)


def _from_16bit(wide):
    import numpy as np

    return ((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8)


def _float_to_u8(values):
    """8-bit values of a float image by its real range (see the module docstring); ValueError when unknown."""
    import numpy as np

    v = values.astype(np.float64)
    if not np.isfinite(v).all():
        raise ValueError("a 32-bit float image (PIL mode F) holding NaN/inf cannot be decoded; convert it to 8 or "
                         "16 bits")
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"a 32-bit float image (PIL mode F) with values in [{lo:g}, {hi:g}] has no known scale "
                         f"(pand reads 0..1, 0..255 or 0..65535); convert it to 8 or 16 bits")
    scale = 255.0 if hi <= 1.0 else (1.0 if hi <= 255.0 else 1.0 / 257.0)
    return np.clip(np.round(v * scale), 0, 255).astype(np.uint8)


def to_rgb(im: Any):
    """``im`` (a PIL image of any mode) as a new 8-bit ``RGB`` PIL image.

    Raises:
        ValueError: a 32-bit integer or float image whose values have no known scale (see the module docstring).
    """
    if im.mode not in WIDE_INT_MODES and im.mode not in FLOAT_MODES:
        return im.convert("RGB")
    import numpy as np
    from PIL import Image

    if im.mode in FLOAT_MODES:
        u8 = _float_to_u8(np.asarray(im))
    else:
        wide = np.asarray(im).astype(np.int64)
        if im.mode == "I" and wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise ValueError(f"a 32-bit integer image (PIL mode I) with values in [{wide.min()}, {wide.max()}] has "
                             f"no known scale (pand reads 0..65535 as 16-bit); convert it to 8 or 16 bits")
        u8 = _from_16bit(wide)
    return Image.fromarray(u8, "L").convert("RGB")
