"""The eval preprocessing of an open_clip model as a :class:`~pand_runtime.preprocess_spec.PreprocessSpec`.

open_clip keeps each built model's preprocessing on ``model.visual.preprocess_cfg`` (``size``, ``mode``, ``mean``,
``std``, ``interpolation``, ``resize_mode``, ``fill_color``; merged from the architecture config, the pretrained tag's
config and ``force_image_size``, :func:`open_clip.get_model_preprocess_cfg`). :func:`open_clip_preprocess_spec`
turns that config into the spec of the transform open_clip's own ``image_transform_v2(cfg, is_train=False)`` builds
from it, so that every consumer of the teacher (Stage PSC's feature cache, Stage NSD's live and cached teacher,
PromptSRC, evaluation, the demo) gets its transform, mean and std from one place
(:func:`pand.data.transforms.create_transform`, :func:`pand.data.transforms.normalize_u8_tensor`), with no default
of pand's own:

* ``resize_mode="shortest"``: ``Resize(size)`` (shorter side) + ``CenterCrop(size)`` -> ``resize_size = image_size``,
  ``resize_mode="shorter_side"``;
* ``resize_mode="squash"`` (SigLIP, DFN): ``Resize((size, size))`` -> ``resize_mode="squash"``;
* interpolation as open_clip's eval transform resamples: ``bilinear`` when the config says ``bilinear``, else
  ``bicubic`` (open_clip's rule; ``random`` is a train-time setting).

A key the config leaves out takes open_clip's own default (:class:`open_clip.transform.PreprocessCfg`), as
``open_clip.create_model_and_transforms`` does.
"""
from __future__ import annotations

from typing import Any, Mapping

import open_clip
from open_clip.transform import PreprocessCfg

from pand.errors import PandError
from pand_runtime.preprocess_spec import PreprocessSpec

__all__ = ["open_clip_preprocess_spec"]

#: open_clip's eval resize modes that a :class:`PreprocessSpec` describes, and their spec name
_RESIZE_MODES = {"shortest": "shorter_side", "squash": "squash"}


def open_clip_preprocess_spec(model: Any) -> PreprocessSpec:
    """The spec of open_clip's eval transform of ``model``.

    Args:
        model: a built open_clip model (its ``visual.preprocess_cfg`` is read), its visual tower, or the preprocess
            config mapping itself (e.g. from :func:`open_clip.get_model_preprocess_cfg`).

    Returns:
        ``PreprocessSpec(image_size=S, resize_size=S, interpolation, mean, std, resize_mode)`` with ``S`` the
        model's input size; ``create_transform(spec, is_train=False)`` gives the same tensors as open_clip's
        ``image_transform_v2(PreprocessCfg(**cfg), is_train=False)`` on an RGB image.

    Raises:
        PandError: a configuration a spec cannot describe: a non-square input size or open_clip's
            ``resize_mode="longest"`` (letterboxing).
    """
    cfg = model if isinstance(model, Mapping) else open_clip.get_model_preprocess_cfg(model)
    pp = PreprocessCfg(**dict(cfg))
    size = pp.size
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or int(size[0]) != int(size[1]):
            raise PandError(f"open_clip preprocess size {tuple(size)} is not square; pand's preprocessing "
                            f"(PreprocessSpec) describes square inputs only: pick a square teacher.image_size")
        size = size[0]
    if pp.resize_mode not in _RESIZE_MODES:
        raise PandError(f"open_clip preprocess resize_mode {pp.resize_mode!r} is not supported (pand reproduces "
                        f"{', '.join(_RESIZE_MODES)}): pick a model whose open_clip config uses one of those")
    mean = pp.mean if isinstance(pp.mean, (list, tuple)) else (pp.mean,) * 3
    std = pp.std if isinstance(pp.std, (list, tuple)) else (pp.std,) * 3
    return PreprocessSpec(image_size=int(size), resize_size=int(size),
                          interpolation="bilinear" if pp.interpolation == "bilinear" else "bicubic",
                          mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
                          resize_mode=_RESIZE_MODES[pp.resize_mode])
