"""Issue 15 item 6: the teacher-cache build decodes each image once for all its views, and
``nsd.teacher_cache.views=auto`` picks the cache only when it is projected to pay off."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import pand.data.base as data_base
from pand.data import FGVCDataset
from pand.data.transforms import PreprocessCfg, create_transform
from pand.nsd import LiveTeacher
from pand.nsd import teacher_cache as tc
from pand.nsd.data import IndexedDataset

NUM_CLASSES = 4


def _png_dataset(root: Path, per_class: int, transform) -> FGVCDataset:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for c in range(NUM_CLASSES):
        for k in range(per_class):
            img = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
            path = root / f"c{c}_{k}.png"
            Image.fromarray(img).save(path)
            samples.append((str(path), c))
    return FGVCDataset(samples, [f"class{c}" for c in range(NUM_CLASSES)], transform=transform, name="png-train")


@pytest.fixture
def train(tmp_path, toy):
    pp = PreprocessCfg(image_size=12, resize_size=14, interpolation="bilinear", mean=toy.mean, std=toy.std)
    return _png_dataset(tmp_path / "img", 4, create_transform(pp, True, "standard", (0.3, 1.0)))  # 16 images


# -- decode once per image -------------------------------------------------------------------------------------
def test_build_decodes_each_image_once_and_stores_the_same_features(toy, train, tmp_path, monkeypatch):
    decoded = []
    read_rgb = data_base.read_rgb
    monkeypatch.setattr(data_base, "read_rgb", lambda path: decoded.append(path) or read_rgb(path))
    live = LiveTeacher(toy.FakeTeacher(image_size=16), toy.mean, toy.std)
    views = 3
    root = tc.build_teacher_cache(live, train, tmp_path / "new", seed=0, views=views, dtype="fp32", batch_size=5,
                                  progress=False)
    assert sorted(decoded) == sorted(p for p, _ in train.samples)  # 16 decodes for 48 views (batches of 5 straddle)
    new = tc.TeacherFeatureCache(root)

    decoded.clear()
    monkeypatch.setattr(tc, "_decode_once", lambda d: d)  # the former path: every view decodes its image again
    old = tc.TeacherFeatureCache(tc.build_teacher_cache(live, train, tmp_path / "old", seed=0, views=views,
                                                        dtype="fp32", batch_size=5, progress=False))
    assert len(decoded) == views * len(train)
    idx = list(range(len(train)))
    for v in range(views):
        assert torch.equal(new.lookup(idx, v), old.lookup(idx, v))
        # and the pixels the training loader makes for (i, v) are the ones the cache encoded
        ds = IndexedDataset(train, 0)
        images = torch.stack([ds[(i, v)][0] for i in idx])
        assert torch.equal(new.lookup(idx, v), live.features(images, torch.tensor(idx)))


def test_datasets_with_their_own_getitem_are_not_wrapped(toy, train):
    class Custom(FGVCDataset):
        def __getitem__(self, index):
            return super().__getitem__(index)

    custom = Custom(train.samples, train.class_names, transform=train.transform)
    assert tc._decode_once(custom) is custom
    plain = toy.make_splits().train  # a torch Dataset without load_image: returned as is
    assert tc._decode_once(plain) is plain
    assert isinstance(tc._decode_once(train), tc._DecodeOnce)
