"""The training eval transform re-implemented with numpy + PIL (no torch): resize, center crop, scale, normalise.

It reproduces ``torchvision.transforms.Compose([Resize(resize_size, interpolation), CenterCrop(image_size),
ToTensor(), Normalize(mean, std)])`` applied to a PIL RGB image:

1. ``resize_shorter``: the shorter side becomes ``resize_size`` and the longer ``int(resize_size * long / short)``
   (torchvision's ``_compute_resized_output_size``); PIL's own ``Image.resize`` with the same filter does the
   resampling, exactly as torchvision does for PIL input (PIL always antialiases bilinear/bicubic). An image that
   already has the target size is returned unchanged, as in torchvision.
2. ``center_crop``: zero-pad to at least ``image_size`` if needed, then crop at
   ``top = int(round((H - S) / 2))``, ``left = int(round((W - S) / 2))``.
3. ``to_float``: ``x = uint8 / 255`` in float32, HWC -> CHW.
4. ``normalize``: ``(x - mean) / std`` per channel in float32.

Steps 1-2 run the identical PIL calls, so the uint8 crop is bit-identical to torchvision's; steps 3-4 are the same
float32 IEEE operations (a division by 255, a subtraction and a division), so the output matches torchvision exactly
(``tests/runtime/test_runtime_preprocess.py`` checks it and asserts a max |diff| of 0 on real images).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Sequence, Union

import numpy as np

from .errors import PandError
from .image import to_rgb
from .preprocess_spec import PreprocessSpec

__all__ = [
    "ImageLike", "resized_size", "resize_shorter", "center_crop", "crop_image", "to_float", "normalize",
    "normalize_u8", "preprocess_image", "prepare_batch", "load_image",
]

ImageLike = Union["Image.Image", str, Path, np.ndarray]  # noqa: F821 - PIL is imported on first use


def _pil():
    """PIL's ``Image`` module, imported on first use so that importing the runtime stays light."""
    from PIL import Image

    return Image


def _resample(interpolation: str):
    """The PIL filter of an interpolation name of :data:`pand_runtime.preprocess_spec.INTERPOLATIONS`."""
    return _pil().Resampling[interpolation.upper()]


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(new_h, new_w)`` when the shorter side of an ``height x width`` image is resized to ``size``.

    The longer side becomes ``int(size * long / short)`` (truncation, as torchvision does).
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_h, new_w


def resize_shorter(img, size: int, interpolation: str = "bilinear"):
    """Resize a PIL image so that its shorter side is ``size`` (see :func:`resized_size`)."""
    new_h, new_w = resized_size(img.height, img.width, size)
    if (new_h, new_w) == (img.height, img.width):
        return img
    return img.resize((new_w, new_h), _resample(interpolation))


def center_crop(img, size: int):
    """Center-crop a PIL image to ``size x size``; smaller images are zero-padded first (torchvision semantics)."""
    w, h = img.width, img.height
    if size > w or size > h:
        Image = _pil()
        left, top = (size - w) // 2 if size > w else 0, (size - h) // 2 if size > h else 0
        pw, ph = w + left + ((size - w + 1) // 2 if size > w else 0), h + top + ((size - h + 1) // 2 if size > h else 0)
        canvas = Image.new(img.mode, (pw, ph), 0)
        canvas.paste(img, (left, top))
        img, w, h = canvas, pw, ph
        if (w, h) == (size, size):
            return img
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def crop_image(img, spec: PreprocessSpec) -> np.ndarray:
    """Resize + center crop a PIL RGB image: uint8 ``[S, S, 3]`` (the geometric part of the eval transform).

    ``spec.resize_mode == "squash"`` resizes both sides to ``S`` (torchvision's ``Resize((S, S))``; an image already
    ``S x S`` is left unchanged) and the crop keeps all of it."""
    if spec.resize_mode == "squash":
        s = spec.image_size
        img = img if img.size == (s, s) else img.resize((s, s), _resample(spec.interpolation))
    else:
        img = resize_shorter(img, spec.resize_size, spec.interpolation)
    img = center_crop(img, spec.image_size)
    return np.asarray(img, dtype=np.uint8)


def to_float(u8: np.ndarray) -> np.ndarray:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[..., 3, H, W]`` in ``[0, 1]``: ``x = u8 / 255``."""
    x = u8.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def normalize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Channel-wise ``(x - mean) / std`` on float32 ``[..., 3, H, W]``."""
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return ((x - m) / s).astype(np.float32, copy=False)


def normalize_u8(u8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Already-cropped uint8 image(s) ``[..., S, S, 3]`` -> the model input ``[..., 3, S, S]`` float32."""
    return normalize(to_float(u8), spec.mean, spec.std)


def load_image(path: Union[str, Path]):
    """Open an image file as a PIL RGB image; raises :class:`PandError` naming the file if it cannot be read.

    16-bit greyscale (PIL modes ``I;16``/``I``) and 32-bit float greyscale (mode ``F``) are scaled to 8 bits by
    their range or refused (:func:`pand_runtime.image.to_rgb`), exactly as in training.
    """
    Image = _pil()
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except Image.DecompressionBombError as e:
        raise PandError(f"image {path} is too large to decode safely ({e}); it may be a decompression bomb. Resize "
                        f"it, or if you trust the file raise PIL.Image.MAX_IMAGE_PIXELS before predicting") from e
    except (OSError, ValueError) as e:
        raise PandError(f"cannot read image {path} ({type(e).__name__}: {e})") from e


def _as_pil(item: Any):
    Image = _pil()
    if isinstance(item, Image.Image):
        if item.mode == "RGB":
            return item
        try:
            return to_rgb(item)
        except ValueError as e:  # a float/32-bit image with no known scale: refused by name, never black
            raise PandError(f"cannot use a PIL image of mode {item.mode}: {e}") from None
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[-1] != 3:
            raise PandError(f"expected an RGB image as a uint8 array of shape (H, W, 3); got dtype={item.dtype}, "
                            f"shape={tuple(item.shape)}")
        return Image.fromarray(item, "RGB")
    raise PandError(f"cannot use a {type(item).__name__} as an image: pass a PIL image, a file path, a uint8 "
                    f"(H, W, 3) RGB array, or a float32 (N, 3, S, S) preprocessed batch")


def preprocess_image(item: Any, spec: PreprocessSpec) -> np.ndarray:
    """One image (PIL, path or uint8 HWC RGB array) -> float32 ``[3, S, S]`` model input."""
    return normalize_u8(crop_image(_as_pil(item), spec), spec)


def _check_float_batch(x: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    s = spec.image_size
    if x.ndim == 3:
        x = x[None]
    if x.dtype != np.float32:
        raise PandError(f"a preprocessed batch must be float32 (N, 3, {s}, {s}); got dtype={x.dtype}. Pass uint8 "
                        f"(H, W, 3) images to have them preprocessed, or cast with .astype(np.float32)")
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
        raise PandError(f"a preprocessed batch must have shape (N, 3, {s}, {s}) (NCHW, RGB); got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(1))
        raise PandError(f"the preprocessed batch holds NaN or inf values (image(s) {bad[:5].tolist()} of {len(x)}); "
                        f"the model would return meaningless probabilities. Check how the batch was built, or pass "
                        f"uint8 (H, W, 3) images to have them preprocessed")
    return np.ascontiguousarray(x)


def prepare_batch(images: Any, spec: PreprocessSpec) -> np.ndarray:
    """Turn what a user passes to ``predict`` into the model input ``float32 [N, 3, S, S]``.

    Accepted: a PIL image, a path, a uint8 ``(H, W, 3)`` RGB array, a list of those, a uint8 ``(N, H, W, 3)``
    array, or an already preprocessed float32 ``(N, 3, S, S)`` / ``(3, S, S)`` array (checked, not transformed).

    Raises:
        PandError: wrong dtype, channel count or size, saying what was expected.
    """
    if isinstance(images, np.ndarray):
        if images.size == 0:
            raise PandError(f"predict got an empty batch (an array of shape {tuple(images.shape)}); pass at least one "
                            f"image")
        if images.dtype == np.uint8:
            if images.ndim == 3:
                return preprocess_image(images, spec)[None]
            if images.ndim == 4 and images.shape[-1] == 3:
                return np.stack([preprocess_image(im, spec) for im in images])
            raise PandError(f"uint8 input must be RGB images (H, W, 3) or (N, H, W, 3); got shape {images.shape}")
        if np.issubdtype(images.dtype, np.floating):
            return _check_float_batch(images, spec)
        raise PandError(f"unsupported array dtype {images.dtype}: pass uint8 (H, W, 3) RGB images or a float32 "
                        f"(N, 3, {spec.image_size}, {spec.image_size}) preprocessed batch")
    items: List[Any] = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise PandError("predict got no images")
    return np.stack([preprocess_image(it, spec) for it in items])
