"""The teacher's preprocessing is one PreprocessSpec read from the open_clip model's own config (issue 27, item 5):
it equals open_clip's preprocess config, its transform gives open_clip's tensors, and every consumer (Stage PSC,
the NSD live/cached teacher, the demo's pre-training) feeds the teacher exactly those pixels; no module keeps a
copy of CLIP's statistics, the default resize ratio or a built-in preprocessing default."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.pretrained import get_pretrained_cfg
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from pand.data.transforms import create_transform, normalize_u8_tensor
from pand.errors import PandError
from pand.models.clip_preprocess import open_clip_preprocess_spec
from pand.models.teacher import TINY_TEACHERS, create_teacher
from pand.models.teacher_source import LiveTeacher
from pand_runtime.preprocess import crop_image, normalize_u8
from pand_runtime.preprocess_spec import CLIP_MEAN, CLIP_STD, RESIZE_RATIO, PreprocessError, PreprocessSpec
from source_tree import parsed_sources

ROOT = Path(__file__).resolve().parents[2]
RESIZE_MODE = {"shortest": "shorter_side", "squash": "squash"}


def _image(w=90, h=70, seed=0) -> Image.Image:
    """A non-square RGB image, so that resize, crop and squash all matter."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _assert_matches_cfg(spec: PreprocessSpec, cfg) -> None:
    size = cfg["size"]
    size = size[0] if isinstance(size, (tuple, list)) else size
    assert (spec.image_size, spec.resize_size) == (size, size)
    assert spec.mean == tuple(cfg["mean"]) and spec.std == tuple(cfg["std"])
    assert spec.interpolation == cfg["interpolation"]
    assert spec.resize_mode == RESIZE_MODE[cfg["resize_mode"]]


@pytest.mark.parametrize("arch", TINY_TEACHERS)
def test_teacher_spec_is_open_clips_config_and_transform(arch):
    teacher = create_teacher({"arch": arch, "pretrained": None})
    cfg = teacher.model.visual.preprocess_cfg
    _assert_matches_cfg(teacher.preprocess_spec, cfg)
    assert teacher.image_size == teacher.preprocess_spec.image_size
    img = _image()
    want = teacher.preprocess(img)  # open_clip's own eval transform
    assert torch.equal(create_transform(teacher.preprocess_spec, is_train=False)(img), want)
    # the torch-free runtime reproduces it too
    assert np.array_equal(normalize_u8(crop_image(img, teacher.preprocess_spec), teacher.preprocess_spec), want.numpy())


@pytest.mark.parametrize("arch,tag", [("ViT-B-16", "openai"),                  # shortest, bicubic
                                      ("ViT-B-16-SigLIP", "webli"),            # squash, bicubic, mean/std 0.5
                                      ("ViT-H-14-quickgelu", "dfn5b")])        # squash, bilinear
def test_real_archs_from_config_only(arch, tag):
    """No model is built: the architecture's input size and the tag's preprocess config, merged as open_clip's
    factory does (``size`` = the vision tower's), give the spec; its transform equals open_clip's."""
    tag_cfg = get_pretrained_cfg(arch, tag)
    assert tag_cfg, f"open_clip has no tag {arch}/{tag}"
    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    keys = {f.name for f in dataclasses.fields(PreprocessCfg)}
    cfg = {**dataclasses.asdict(PreprocessCfg()), **{k: v for k, v in tag_cfg.items() if k in keys}, "size": size}
    spec = open_clip_preprocess_spec(cfg)
    _assert_matches_cfg(spec, cfg)
    img = _image(300, 200)
    want = image_transform_v2(PreprocessCfg(**cfg), is_train=False)(img)
    assert torch.equal(create_transform(spec, is_train=False)(img), want)
    assert np.array_equal(normalize_u8(crop_image(img, spec), spec), want.numpy())


def test_unsupported_open_clip_configs_are_refused():
    base = dataclasses.asdict(PreprocessCfg())
    with pytest.raises(PandError, match="not square"):
        open_clip_preprocess_spec({**base, "size": (224, 192)})
    with pytest.raises(PandError, match="longest"):
        open_clip_preprocess_spec({**base, "resize_mode": "longest"})
    with pytest.raises(PreprocessError, match="squash"):
        PreprocessSpec(image_size=64, resize_size=72, resize_mode="squash")


@pytest.fixture(scope="module")
def tiny_teacher():
    return create_teacher({"arch": "pand-tiny-vit", "pretrained": None})


class _Recording:
    """The tiny teacher, recording what ``encode_image`` is fed."""

    def __init__(self, teacher):
        self.teacher, self.seen = teacher, []
        self.embed_dim, self.preprocess_spec = teacher.embed_dim, teacher.preprocess_spec

    def encode_image(self, x):
        self.seen.append(x)
        return self.teacher.encode_image(x)


@pytest.mark.parametrize("student_size", [64, 48])
def test_nsd_teacher_input_is_the_teachers_preprocessing(tiny_teacher, student_size):
    """The live teacher (and so the cache, which stores its features) feeds the teacher the student's pixels in the
    teacher's normalisation, at the teacher's size and interpolation."""
    spec = tiny_teacher.preprocess_spec
    student = PreprocessSpec(image_size=student_size, resize_size=student_size, interpolation=spec.interpolation,
                             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    img = _image()
    x_student = create_transform(student, is_train=False)(img).unsqueeze(0)
    rec = _Recording(tiny_teacher)
    LiveTeacher(rec, student.mean, student.std).features(x_student, torch.arange(1))
    (fed,) = rec.seen
    if student_size == spec.image_size:  # same pixels: the teacher's own transform, up to float rounding
        torch.testing.assert_close(fed[0], tiny_teacher.preprocess(img), atol=2e-6, rtol=0)
    else:  # resized to the teacher's size, with the teacher spec's interpolation
        assert fed.shape == (1, 3, spec.image_size, spec.image_size)
        from pand.models.teacher_source import renormalize

        want = renormalize(x_student, student.mean, student.std, spec.mean, spec.std, spec.image_size,
                           spec.interpolation)
        assert torch.equal(fed, want)


def test_nsd_cache_key_holds_the_teacher_spec(tiny_teacher, tmp_path):
    from pand.data.base import FGVCDataset
    from pand.nsd.teacher_cache import teacher_cache_meta

    _image().save(tmp_path / "a.png")
    ds = FGVCDataset([(str(tmp_path / "a.png"), 0)], ["a"], name="one")
    live = LiveTeacher(tiny_teacher, CLIP_MEAN, CLIP_STD)
    meta = teacher_cache_meta(live, ds, seed=0, views=2)["teacher_input"]
    spec = tiny_teacher.preprocess_spec
    assert meta["teacher_mean"] == list(spec.mean) and meta["teacher_std"] == list(spec.std)
    assert (meta["size"], meta["interpolation"]) == (spec.image_size, spec.interpolation)


def test_demo_pretraining_normalises_as_the_teacher_transform(tmp_path):
    """The demo's pre-training keeps images as uint8 tensors (:func:`load_images_u8`) and normalises per batch
    (:func:`normalize_u8_tensor`): exactly the teacher spec's transform."""
    from pand.demo.teacher_pretrain import load_images_u8

    model = open_clip.create_model("pand-demo-rn", pretrained=None)
    spec = open_clip_preprocess_spec(model)
    paths = []
    for i, (w, h) in enumerate([(90, 70), (spec.image_size, spec.image_size), (40, 40)]):
        paths.append(str(tmp_path / f"{i}.png"))
        _image(w, h, seed=i).save(paths[-1])
    x = normalize_u8_tensor(load_images_u8(paths, spec), spec)
    want = torch.stack([create_transform(spec, is_train=False)(Image.open(p).convert("RGB")) for p in paths])
    assert torch.equal(x, want)


# -- no copies ------------------------------------------------------------------------------------------------------
_OWNER = "runtime/preprocess_spec.py"  # CLIP's mean/std and the resize ratio are defined here, once
_CONSTANTS = {*CLIP_MEAN, *CLIP_STD, RESIZE_RATIO}
_PREPROCESS_FIELDS = {"mean", "std", "interpolation", "image_size", "resize_mode", "preprocess_cfg", "size",
                      "image_mean", "image_std"}


def test_no_copy_of_clip_statistics_or_resize_ratio():
    hits = [f"{rel}:{n.lineno}" for rel, tree in parsed_sources() if rel != _OWNER for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, float) and n.value in _CONSTANTS]
    names = [f"{rel}:{n.lineno}" for rel, tree in parsed_sources() for n in ast.walk(tree)
             if isinstance(n, (ast.Attribute, ast.Name, ast.alias))
             and getattr(n, "attr", getattr(n, "id", getattr(n, "name", ""))) in ("OPENAI_DATASET_MEAN",
                                                                                   "OPENAI_DATASET_STD")]
    assert hits == [] and names == []


def test_no_preprocessing_read_with_a_fallback():
    """``getattr(x, "interpolation", "bicubic")`` / ``cfg.get("mean", ...)``: a default of pand's own for what
    the model's config says; the teacher's come from ``open_clip_preprocess_spec``."""
    hits = []
    for rel, tree in parsed_sources():
        for n in ast.walk(tree):
            if not isinstance(n, ast.Call):
                continue
            fn, key = n.func, None
            if isinstance(fn, ast.Name) and fn.id == "getattr" and len(n.args) == 3:
                key = n.args[1]  # getattr(obj, key, default)
            elif isinstance(fn, ast.Attribute) and fn.attr == "get" and len(n.args) == 2:
                key = n.args[0]  # mapping.get(key, default)
            if isinstance(key, ast.Constant) and key.value in _PREPROCESS_FIELDS:
                hits.append(f"{rel}:{n.lineno} {ast.unparse(n)}")
    assert hits == []
