"""Image transforms of the student and of the teacher (and of everything that must see the same pixels), built from
their :class:`~pand_runtime.preprocess_spec.PreprocessSpec`: the student's from its config
(:func:`preprocess_spec_from_student`), the teacher's from its open_clip model's own preprocess config
(:func:`pand.models.clip_preprocess.open_clip_preprocess_spec`, ``Teacher.preprocess_spec``).

* Eval: the transform the spec describes (defined in :mod:`pand_runtime.preprocess_spec`, reproduced without torch by
  :mod:`pand_runtime.preprocess`): ``Resize(resize_size, interpolation)`` (shorter side, antialiased PIL resampling;
  ``Resize((S, S))`` for ``resize_mode="squash"``) -> ``CenterCrop(image_size)`` -> ``ToTensor`` ->
  ``Normalize(mean, std)``.
* Already-resized uint8 tensors: :func:`normalize_u8_tensor`, the last two steps in torch.
* Train "standard" (:class:`RandomResizedCropFlip`): RandomResizedCrop(image_size, scale, ratio 3/4..4/3) +
  horizontal flip (p = 0.5) + ToTensor + Normalize. Its random parameters can be drawn from an explicit
  ``torch.Generator`` (``sample_params``) and replayed (``apply``), for augmentation replay of cached teacher
  features. Called directly it draws from torch's global RNG in the same order as torchvision's
  ``RandomResizedCrop`` followed by ``RandomHorizontalFlip``, so the two agree pixel for pixel under one seed.
* Train "pand_reference": the reference's heavy augmentation (docs/method.md, "Image transforms"), scaled to
  ``image_size``.
* "none": the eval transform.

torch and torchvision are imported when a transform is built or run, so that importing :mod:`pand.data` stays light.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Tuple

from pand_runtime.preprocess_spec import PreprocessSpec, default_resize_size

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import StudentCfg

__all__ = [
    "preprocess_spec_from_student", "create_transform", "normalize_u8_tensor", "CropFlipParams",
    "RandomResizedCropFlip", "RandomCropAndResize", "AUGMENTS",
]

AUGMENTS = ("standard", "pand_reference", "none")


def preprocess_spec_from_student(student_cfg: StudentCfg) -> PreprocessSpec:
    """The :class:`PreprocessSpec` of a ``student`` config section (:class:`pand.config.schema.StudentCfg`).

    ``resize_size`` null means :func:`~pand_runtime.preprocess_spec.default_resize_size` (``round(image_size /
    0.875)``: 224 -> 256, 64 -> 73).
    """
    size = int(student_cfg.image_size)
    resize = student_cfg.resize_size
    return PreprocessSpec(
        image_size=size,
        resize_size=int(resize) if resize else default_resize_size(size),
        interpolation=str(student_cfg.interpolation),
        mean=tuple(student_cfg.mean),
        std=tuple(student_cfg.std),
    )


def _mode(name: str):
    """The torchvision ``InterpolationMode`` of an interpolation name (its values are the names)."""
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name)


def _to_tensor_normalize(pp: PreprocessSpec) -> list:
    from torchvision import transforms as T

    return [T.ToTensor(), T.Normalize(pp.mean, pp.std)]


@dataclass(frozen=True)
class CropFlipParams:
    """Random parameters of one :class:`RandomResizedCropFlip` draw: crop box in input pixels + flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool

    def as_tuple(self) -> Tuple[int, int, int, int, int]:
        return (self.top, self.left, self.height, self.width, int(self.flip))


class RandomResizedCropFlip:
    """The "standard" train transform with replayable parameters.

    ``RandomResizedCrop(image_size, scale, ratio)`` + ``RandomHorizontalFlip(flip_p)`` + ToTensor + Normalize.

    Args:
        pp: preprocessing (size, interpolation, mean/std).
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (w / h), sampled log-uniformly.
        flip_p: probability of a horizontal flip.
    """

    def __init__(self, pp: PreprocessSpec, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), flip_p: float = 0.5):
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {tuple(scale)}")
        self.pp = pp
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip_p = float(flip_p)
        self._post = None

    def sample_params(self, img_w: int, img_h: int, generator: Optional[Any] = None) -> CropFlipParams:
        """Draw crop box and flip for an ``img_w x img_h`` image; a pure function of ``generator``'s state.

        Same algorithm and draw order as ``torchvision.transforms.RandomResizedCrop.get_params`` (up to 10
        tries of area ~ U(scale) * area, log-ratio ~ U(log ratio); else a central crop clipped to the ratio)
        followed by ``RandomHorizontalFlip``'s ``rand(1) < p``. ``generator=None`` uses torch's global RNG.
        """
        import torch

        area = img_h * img_w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        box = None
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(self.scale[0], self.scale[1], generator=generator).item()
            aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= img_w and 0 < h <= img_h:
                i = int(torch.randint(0, img_h - h + 1, size=(1,), generator=generator).item())
                j = int(torch.randint(0, img_w - w + 1, size=(1,), generator=generator).item())
                box = (i, j, h, w)
                break
        if box is None:  # central crop, clipped to the ratio range
            in_ratio = img_w / img_h
            if in_ratio < min(self.ratio):
                w, h = img_w, int(round(img_w / min(self.ratio)))
            elif in_ratio > max(self.ratio):
                h, w = img_h, int(round(img_h * max(self.ratio)))
            else:
                w, h = img_w, img_h
            box = ((img_h - h) // 2, (img_w - w) // 2, h, w)
        flip = bool(torch.rand(1, generator=generator).item() < self.flip_p)
        return CropFlipParams(top=box[0], left=box[1], height=box[2], width=box[3], flip=flip)

    def apply(self, img: Any, params: CropFlipParams):
        """Crop ``img`` (PIL image) to ``params``' box, resize to ``image_size``, flip, ToTensor, Normalize."""
        from torchvision import transforms as T
        from torchvision.transforms import functional as F

        out = F.resized_crop(img, params.top, params.left, params.height, params.width,
                             [self.pp.image_size, self.pp.image_size], _mode(self.pp.interpolation), antialias=True)
        if params.flip:
            out = F.hflip(out)
        if self._post is None:
            self._post = T.Compose(_to_tensor_normalize(self.pp))
        return self._post(out)

    def __call__(self, img: Any):
        w, h = _image_size(img)
        return self.apply(img, self.sample_params(w, h, None))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.pp.image_size}, scale={self.scale}, ratio={self.ratio}, "
                f"flip_p={self.flip_p}, interpolation={self.pp.interpolation})")


def _image_size(img: Any) -> Tuple[int, int]:
    if hasattr(img, "size") and not callable(img.size):  # PIL
        return int(img.size[0]), int(img.size[1])
    return int(img.shape[-1]), int(img.shape[-2])  # tensor [..., H, W]


class RandomCropAndResize:
    """The reference's ``RandomCropAndResize``: side ``s ~ U{min_size..max_size}``, RandomCrop(s), Resize(out).

    The reference draws ``s`` with python's ``random``; here it comes from torch's RNG so that one torch seed
    (and the DataLoader's per-worker seeding) fixes every draw.
    """

    def __init__(self, min_size: int, max_size: int, out_size: int, interpolation: str = "bilinear"):
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size, self.out_size = int(min_size), int(max_size), int(out_size)
        self.interpolation = interpolation

    def __call__(self, img: Any):
        import torch
        from torchvision import transforms as T
        from torchvision.transforms import functional as F

        s = int(torch.randint(self.min_size, self.max_size + 1, (1,)).item())
        img = T.RandomCrop(s)(img)
        return F.resize(img, [self.out_size, self.out_size], _mode(self.interpolation), antialias=True)


def _pand_reference(pp: PreprocessSpec) -> Callable:
    """The reference's heavy train augmentation (docs/method.md), 256/224/192 scaled by ``image_size / 224``."""
    from torchvision import transforms as T

    size = pp.image_size
    pre = int(round(size * 256 / 224))
    lo = max(1, int(round(size * 192 / 224)))
    return T.Compose([
        T.Resize((pre, pre), interpolation=_mode(pp.interpolation)),  # squashes the aspect ratio, as the reference
        T.RandomCrop(size),
        RandomCropAndResize(lo, size, size, pp.interpolation),
        T.RandomRotation(60, interpolation=_mode("bilinear")),
        T.GaussianBlur(5, sigma=(1e-5, 10.0)),
        T.ColorJitter(brightness=0.3, contrast=0.1, saturation=0.1, hue=0.1),
        T.RandomHorizontalFlip(),
        *_to_tensor_normalize(pp),
    ])


def _eval(pp: PreprocessSpec) -> Callable:
    from torchvision import transforms as T

    size = (pp.image_size, pp.image_size) if pp.resize_mode == "squash" else pp.resize_size
    return T.Compose([
        T.Resize(size, interpolation=_mode(pp.interpolation)),
        T.CenterCrop(pp.image_size),
        *_to_tensor_normalize(pp),
    ])


def create_transform(pp: PreprocessSpec, is_train: bool, augment: str = "standard",
                     crop_scale: Sequence[float] = (0.08, 1.0)) -> Callable:
    """The train or eval transform (PIL RGB image -> normalised ``[3, image_size, image_size]`` float tensor).

    Args:
        pp: preprocessing settings (:func:`preprocess_spec_from_student`).
        is_train: False gives the eval transform whatever ``augment`` says.
        augment: ``standard`` | ``pand_reference`` | ``none`` (= eval transform, also for training).
        crop_scale: RandomResizedCrop area range of ``standard``.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; valid: {', '.join(AUGMENTS)}")
    if not is_train or augment == "none":
        return _eval(pp)
    if augment == "standard":
        return RandomResizedCropFlip(pp, scale=tuple(crop_scale))
    return _pand_reference(pp)


def normalize_u8_tensor(x_u8: Any, pp: PreprocessSpec) -> Any:
    """uint8 images ``[B, 3, H, W]`` (already resized and cropped) -> ``(x / 255 - mean) / std`` float32
    ``[B, 3, H, W]``, mean/std of ``pp``: the ``ToTensor`` + ``Normalize`` of :func:`create_transform`'s eval
    transform, in the same float32 operations, for pixels kept as one tensor (the demo teacher's pre-training)."""
    import torch

    mean = torch.tensor(pp.mean, dtype=torch.float32, device=x_u8.device).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float32, device=x_u8.device).view(1, 3, 1, 1)
    return (x_u8.float() / 255.0 - mean) / std
