"""The eval preprocessing of a student as data: one type for training, export and the runtime.

:class:`PreprocessSpec` describes the eval transform exactly. Training builds its torchvision transforms from it
(``pand.data.transforms.create_transform``), a student checkpoint stores its five parameters (:meth:`to_dict`),
``pand-export`` writes all of it into the bundle's ``manifest.json`` and the runtime reproduces the transform from it
with numpy + PIL (:mod:`.preprocess`):

1. resize (``resize_mode="shorter_side"``): the shorter side becomes ``resize_size``, the longer side
   ``int(resize_size * long / short)`` (truncated, as torchvision does), PIL resampling with ``interpolation``
   (antialiased); ``resize_mode="squash"`` (open_clip's SigLIP/DFN teachers) resizes both sides to ``image_size``
   instead, ignoring the aspect ratio (``resize_size == image_size``, so the crop keeps everything);
2. center crop: the centred ``image_size`` square, top = ``int(round((H - image_size) / 2))``, left likewise;
3. scale: RGB uint8 HWC -> float32 CHW, ``x = u8 / 255``;
4. normalise: ``(x - mean[c]) / std[c]`` per channel.

The constants every part shares live here too: the interpolation names, CLIP's mean/std and the default resize ratio
(``resize_size = round(image_size / RESIZE_RATIO)``, 224 -> 256).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

from .errors import ArtifactError, PandError
from .json_fields import as_dict, get_int, get_list, get_str, require

__all__ = [
    "INTERPOLATIONS", "RESIZE_MODES", "CLIP_MEAN", "CLIP_STD", "RESIZE_RATIO", "PreprocessError", "PreprocessSpec",
    "default_resize_size",
]

#: PIL resampling filters by name (``PIL.Image.Resampling[name.upper()]``, ``torchvision InterpolationMode(name)``)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
#: how the image is brought to the crop: the shorter side to ``resize_size`` (aspect kept), or both sides to
#: ``image_size`` (``squash``, aspect ignored)
RESIZE_MODES = ("shorter_side", "squash")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: the crop covers this fraction of the resized shorter side by default (the ImageNet convention 224 / 256)
RESIZE_RATIO = 0.875


def default_resize_size(image_size: int) -> int:
    """``round(image_size / RESIZE_RATIO)``: 224 -> 256, 64 -> 73."""
    return int(round(image_size / RESIZE_RATIO))


class PreprocessError(PandError, ValueError):
    """Preprocessing values that cannot describe an eval transform (unknown filter, zero std, crop > resize)."""


@dataclass(frozen=True)
class PreprocessSpec:
    """The eval transform, exactly (see the module docstring): resize the shorter side, center crop, RGB, scale,
    normalise, NCHW float32, i.e. ``out = (crop(resize(img)) / 255 - mean) / std`` channel-wise.

    Attributes:
        image_size: side ``S`` of the square network input ``[N, 3, S, S]``.
        resize_size: the shorter side is resized to this before the center crop (``>= image_size``).
        interpolation: ``bilinear`` | ``bicubic`` | ``nearest`` (PIL resampling).
        mean, std: per-channel RGB statistics (3 floats each, ``std > 0``).
        resize_mode: ``shorter_side`` (the students) | ``squash`` (``resize_size == image_size``; some open_clip
            teachers, :func:`pand.models.clip_preprocess.open_clip_preprocess_spec`).
        color_order, layout, dtype, scale, crop_mode: the fixed rest of the transform, written into the manifest so
            that it describes the input completely.

    Raises:
        PreprocessError: invalid values (a :class:`ValueError` and a :class:`PandError`).
    """

    image_size: int
    resize_size: int
    interpolation: str = "bilinear"
    mean: Tuple[float, float, float] = CLIP_MEAN
    std: Tuple[float, float, float] = CLIP_STD
    color_order: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    scale: float = 1.0 / 255.0
    resize_mode: str = "shorter_side"
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise PreprocessError(f"preprocess.interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise PreprocessError(f"preprocess mean/std need 3 values (RGB); got mean={self.mean}, std={self.std}")
        if self.resize_mode not in RESIZE_MODES:
            raise PreprocessError(f"preprocess.resize_mode {self.resize_mode!r} is not one of {RESIZE_MODES}")
        if self.resize_mode == "squash" and self.resize_size != self.image_size:
            raise PreprocessError(f"preprocess.resize_mode 'squash' resizes to image_size {self.image_size}; "
                                  f"resize_size must equal it, got {self.resize_size}")
        if self.resize_size < self.image_size:
            raise PreprocessError(f"preprocess.resize_size {self.resize_size} < image_size {self.image_size}")
        if not all(math.isfinite(v) for v in self.mean):
            raise PreprocessError(f"preprocess.mean {self.mean} has a non-finite value")
        if not all(math.isfinite(v) and v > 0 for v in self.std):
            raise PreprocessError(f"preprocess.std {self.std} must be finite and > 0 (a zero std divides by zero and "
                                  f"turns every prediction into NaN)")
        if self.image_size < 1:
            raise PreprocessError(f"preprocess.image_size must be >= 1, got {self.image_size}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> Dict[str, Any]:
        """The five parameters that define the transform, JSON-ready (what a student checkpoint stores):
        ``{image_size, resize_size, interpolation, mean: [3], std: [3]}``. The manifest stores every field."""
        return {"image_size": self.image_size, "resize_size": self.resize_size, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "manifest 'preprocess'") -> "PreprocessSpec":
        """Parse :meth:`to_dict` or the manifest's full form (fields not of this type are ignored).

        Raises:
            ArtifactError: a missing or mistyped field, or values that do not describe a transform (the stored
                artifact ``what`` is damaged or was edited).
        """
        require(as_dict(d, what), ("image_size", "resize_size", "interpolation", "mean", "std"), what)
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["mean"] = [float(v) for v in get_list(d, "mean", what, (int, float), "a list of 3 numbers")]
        known["std"] = [float(v) for v in get_list(d, "std", what, (int, float), "a list of 3 numbers")]
        known["image_size"] = get_int(d, "image_size", what)
        known["resize_size"] = get_int(d, "resize_size", what)
        known["interpolation"] = get_str(d, "interpolation", what)
        try:
            return cls(**known)
        except PreprocessError as e:
            raise ArtifactError(f"{what}: {e}; re-export the bundle with pand-export") from None
