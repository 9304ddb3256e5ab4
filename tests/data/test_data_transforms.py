"""Eval transform (exact geometry and normalisation), replayable train transform, reference augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pand.config.schema import StudentCfg
from pand.data.transforms import (
    CropFlipParams,
    RandomResizedCropFlip,
    create_transform,
    preprocess_spec_from_student,
)
from pand_runtime.preprocess_spec import CLIP_MEAN, PreprocessSpec

PP = PreprocessSpec(image_size=16, resize_size=20, interpolation="bilinear")


def _img(w=50, h=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def test_preprocess_spec_from_student():
    pp = preprocess_spec_from_student(StudentCfg(image_size=224, resize_size=None, interpolation="bicubic",
                                                mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))
    assert (pp.image_size, pp.resize_size, pp.interpolation) == (224, 256, "bicubic")
    assert preprocess_spec_from_student(StudentCfg(image_size=64)).resize_size == 73  # round(64 / 0.875)
    assert preprocess_spec_from_student(StudentCfg(image_size=64, resize_size=72)).resize_size == 72
    assert preprocess_spec_from_student(StudentCfg(image_size=64)).mean == CLIP_MEAN  # the schema's default
    assert PreprocessSpec.from_dict(pp.to_dict()) == pp
    with pytest.raises(ValueError):
        PreprocessSpec(image_size=32, resize_size=16)


def test_eval_constant_image_normalisation():
    rgb = (200, 64, 10)
    x = create_transform(PP, is_train=False)(Image.new("RGB", (40, 25), rgb))
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    for c in range(3):
        want = (rgb[c] / 255.0 - PP.mean[c]) / PP.std[c]
        assert torch.allclose(x[c], torch.full((16, 16), want), atol=1e-5)


@pytest.mark.parametrize("w,h", [(50, 30), (30, 50), (21, 21)])
def test_eval_geometry_is_the_documented_formula(w, h):
    # the runtime reproduces: shorter side -> resize_size, longer = int(resize * long / short), PIL resize,
    # then crop at top = round((H - S) / 2), left = round((W - S) / 2)
    img = _img(w, h)
    short, long_ = min(w, h), max(w, h)
    new = (PP.resize_size, int(PP.resize_size * long_ / short))
    nw, nh = (new[0], new[1]) if w <= h else (new[1], new[0])
    r = img.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - 16) / 2)), int(round((nw - 16) / 2))
    ref = np.asarray(r.crop((left, top, left + 16, top + 16)), dtype=np.float32) / 255.0
    ref = (ref - np.array(PP.mean, np.float32)) / np.array(PP.std, np.float32)
    got = create_transform(PP, is_train=False)(img).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_none_augment_is_eval():
    img = _img()
    a = create_transform(PP, is_train=True, augment="none")(img)
    b = create_transform(PP, is_train=False, augment="pand_reference")(img)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown augment"):
        create_transform(PP, is_train=True, augment="heavy")


def test_standard_params_are_a_pure_function_of_the_generator():
    t = create_transform(PP, is_train=True, augment="standard", crop_scale=(0.3, 1.0))
    assert isinstance(t, RandomResizedCropFlip)
    state = torch.get_rng_state()
    p1 = [t.sample_params(50, 30, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert p1[0] == p1[1]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    g = torch.Generator().manual_seed(7)
    seq = [t.sample_params(50, 30, g) for _ in range(20)]
    g.manual_seed(7)
    assert [t.sample_params(50, 30, g) for _ in range(20)] == seq
    assert len({p.as_tuple() for p in seq}) > 10 and {p.flip for p in seq} == {True, False}
    for p in seq:
        assert 0 <= p.top and p.top + p.height <= 30 and 0 <= p.left and p.left + p.width <= 50
        assert p.height * p.width >= 0.3 * 50 * 30 * 0.9  # area within the scale range (up to rounding)


def test_standard_replay_gives_same_pixels():
    t = RandomResizedCropFlip(PP, scale=(0.2, 1.0))
    img = _img()
    g = torch.Generator().manual_seed(123)
    params = t.sample_params(*img.size, g)
    a = t.apply(img, params)
    g2 = torch.Generator().manual_seed(123)
    b = t.apply(img, t.sample_params(*img.size, g2))
    assert torch.equal(a, b) and a.shape == (3, 16, 16)
    flipped = t.apply(img, CropFlipParams(params.top, params.left, params.height, params.width, not params.flip))
    assert torch.equal(flipped, torch.flip(a, dims=[2]))


def test_standard_call_matches_torchvision_under_one_seed():
    from torchvision import transforms as T

    ours = RandomResizedCropFlip(PP, scale=(0.08, 1.0))
    ref = T.Compose([T.RandomResizedCrop(16, scale=(0.08, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(),
                     T.Normalize(PP.mean, PP.std)])
    img = _img(64, 40)
    for seed in range(5):
        torch.manual_seed(seed)
        a = ours(img)
        torch.manual_seed(seed)
        b = ref(img)
        assert torch.equal(a, b)


def test_central_crop_fallback():
    # an extreme aspect ratio makes all 10 tries fail: central crop clipped to the ratio range
    t = RandomResizedCropFlip(PP, scale=(0.9, 1.0), ratio=(1.0, 1.0))
    p = t.sample_params(100, 10, torch.Generator().manual_seed(0))
    assert (p.top, p.left, p.height, p.width) == (0, 45, 10, 10)


def test_pand_reference_augmentation_seeded():
    t = create_transform(PreprocessSpec(image_size=32, resize_size=37), is_train=True, augment="pand_reference")
    img = _img(60, 40)
    torch.manual_seed(0)
    a = t(img)
    torch.manual_seed(0)
    b = t(img)
    torch.manual_seed(1)
    c = t(img)
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    names = [type(x).__name__ for x in t.transforms]
    assert names == ["Resize", "RandomCrop", "RandomCropAndResize", "RandomRotation", "GaussianBlur", "ColorJitter",
                     "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert t.transforms[0].size == (37, 37) and t.transforms[2].min_size == 27  # 256/224 and 192/224 scaled
