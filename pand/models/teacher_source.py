"""The one seam through which Stage NSD gets teacher image features (PromptKD's live teacher uses it too).

The training loop only ever calls ``source.features(images, indices)`` and never knows whether the features
come from a live teacher forward pass (:class:`LiveTeacher`) or from a cache of pre-computed augmented views
(:class:`pand.nsd.teacher_cache.CachedTeacher`). ``images`` are the student's batch exactly as the student sees
it (augmented, normalised with the *student's* mean/std, on the training device); ``indices`` are the dataset
indices of the samples.

Augmentation replay: the training dataset draws the random augmentation of sample ``i`` from a seed that is
a function of ``(trainer.seed, view, i)`` only (:class:`pand.engine.loaders.IndexedDataset`). Before every epoch the
engine asks the source which view each image uses (:meth:`TeacherSource.views`), hands those views to the training
sampler and tells the source the epoch (:meth:`TeacherSource.set_epoch`). A live teacher uses ``view = epoch`` for
every image (fresh augmentations every epoch); a cache with ``V`` stored views
(:class:`pand.nsd.teacher_cache.CachedTeacher`) gives each image its own view in ``[0, V)`` per epoch
(:func:`pand.engine.loaders.replay_views`) and looks features up by ``(index, view)``, because the same ``(view, i)``
always reproduces the same pixels.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from pand.errors import PandError
from pand_runtime.preprocess_spec import INTERPOLATIONS

__all__ = ["TeacherSource", "LiveTeacher", "renormalize"]

Size = Union[int, Tuple[int, int], None]


@runtime_checkable
class TeacherSource(Protocol):
    """What Stage NSD needs from a teacher: ``embed_dim`` and L2-normalised image features."""

    embed_dim: int

    def set_epoch(self, epoch: int) -> None:
        """Called once at the start of every training epoch (0-based), before any :meth:`features` call."""

    def views(self, epoch: int, count: int) -> Union[int, np.ndarray]:
        """The augmentation view of every training image in ``epoch``: one int for all, or ``[count]`` ints."""

    def features(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``[B, D_t]`` float32, L2-normalised teacher features of ``images`` (no gradient), on their device."""


def renormalize(
    images: torch.Tensor,
    src_mean: Sequence[float],
    src_std: Sequence[float],
    dst_mean: Sequence[float],
    dst_std: Sequence[float],
    size: Size = None,
    interpolation: Optional[str] = None,
) -> torch.Tensor:
    """Re-express a normalised batch in another model's normalisation (and size).

    ``pixels = x * src_std + src_mean``; ``y = (pixels - dst_mean) / dst_std``; then, when ``size`` differs
    from the input's spatial size, ``y`` is resized (antialiased ``interpolation``). Resizing after the affine
    map equals resizing the pixels first, since interpolation weights sum to one.

    Args:
        images: ``[B, 3, H, W]`` normalised with ``src_mean``/``src_std``.
        src_mean, src_std: the normalisation ``images`` carry (the student's).
        dst_mean, dst_std: the normalisation wanted (the teacher's).
        size: target ``int`` (square) or ``(H, W)``; None keeps the size.
        interpolation: ``bicubic`` | ``bilinear`` | ``nearest`` (a :data:`~pand_runtime.preprocess_spec.INTERPOLATIONS`
            name, e.g. the teacher spec's); needed when the size changes.

    Returns:
        ``[B, 3, H', W']`` float32.
    """
    x = images.float()

    def col(v):
        return torch.as_tensor(list(v), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)

    x = (x * col(src_std) + col(src_mean) - col(dst_mean)) / col(dst_std)
    if size is not None:
        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if tuple(x.shape[-2:]) != hw:
            if interpolation not in INTERPOLATIONS:
                raise PandError(f"renormalize: interpolation {interpolation!r} is not one of {INTERPOLATIONS}")
            kw = {} if interpolation == "nearest" else {"align_corners": False, "antialias": True}
            x = F.interpolate(x, size=hw, mode=interpolation, **kw)
    return x


class LiveTeacher:
    """Runs the frozen teacher on every training batch (the reference's behaviour).

    The teacher sees the student's augmented pixels, re-normalised to its own mean/std and resized to its
    input size when that differs (the reference feeds the 224 student crop to a 256 teacher; set
    ``resize=False`` to reproduce that). Mean, std, size and interpolation are the teacher's
    ``preprocess_spec`` (:func:`pand.models.clip_preprocess.open_clip_preprocess_spec`).

    Args:
        teacher: object with ``encode_image(x) -> [B, D_t]`` (L2-normalised), ``embed_dim`` and ``preprocess_spec``
            (a :class:`pand.models.teacher.Teacher`).
        student_mean, student_std: the normalisation of the student's batches.
        resize: resize to ``teacher.image_size`` when the student's size differs.
        channels_last: feed the teacher channels-last tensors (CUDA).
    """

    def __init__(
        self,
        teacher,
        student_mean: Sequence[float],
        student_std: Sequence[float],
        resize: bool = True,
        channels_last: bool = False,
    ):
        self.teacher = teacher
        self.embed_dim = int(teacher.embed_dim)
        self.student_mean = tuple(float(v) for v in student_mean)
        self.student_std = tuple(float(v) for v in student_std)
        spec = teacher.preprocess_spec
        self.teacher_mean, self.teacher_std = spec.mean, spec.std
        self.size: Size = spec.image_size if resize else None
        self.interpolation = spec.interpolation
        self.channels_last = channels_last
        self.epoch: Optional[int] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def views(self, epoch: int, count: int) -> int:
        """``epoch`` for every image: never-repeated augmentations, as the reference's random transforms."""
        return int(epoch)

    @torch.no_grad()
    def features(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x = renormalize(images, self.student_mean, self.student_std, self.teacher_mean, self.teacher_std,
                        self.size, self.interpolation)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        f = self.teacher.encode_image(x)
        return f.float().to(images.device)
