"""Teacher image-feature cache: one teacher pass per image, reuse on the same key, invalidation otherwise."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from pand.psc.features import extract_features, feature_cache_path
from pand.utils.digest import describe_transform, samples_hash
from pand.utils.io import load_tensors


class Counting:
    """Wraps a teacher and counts the images that go through ``encode_image``."""

    def __init__(self, teacher):
        self._t = teacher
        self.images = 0
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._t, name)

    def encode_image(self, x):
        self.images += x.shape[0]
        self.calls += 1
        return self._t.encode_image(x)


def test_extract_once_then_reuse(tmp_path, tiny_teacher, toy_splits):
    ds = toy_splits.train
    cache = tmp_path / "not" / "yet" / "there"
    t = Counting(tiny_teacher)
    f, y = extract_features(t, ds, cache, key_extra={"split": "train"}, batch_size=5, progress=False)
    N = len(ds)
    assert t.images == N and t.calls == -(-N // 5)  # every image exactly once, in ceil(N/5) batches
    assert f.shape == (N, tiny_teacher.embed_dim) and f.dtype == torch.float32
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(N))
    assert y.tolist() == ds.targets and y.dtype == torch.long
    # the teacher's OWN eval preprocessing, no augmentation: same as encoding preprocessed images directly
    x = torch.stack([tiny_teacher.preprocess(ds.load_image(i)) for i in range(3)])
    torch.testing.assert_close(f[:3], tiny_teacher.encode_image(x), atol=1e-5, rtol=0)

    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    _, meta = load_tensors(files[0])
    assert meta["teacher_identity"] == tiny_teacher.identity and meta["split"] == "train"
    assert meta["dataset"] == "toy/train" and meta["count"] == N and meta["samples_hash"] == samples_hash(ds)
    assert "Resize" in meta["transform"] and "0x" not in meta["transform"]

    t2 = Counting(tiny_teacher)
    f2, y2 = extract_features(t2, ds, cache, key_extra={"split": "train"}, batch_size=7, progress=False)
    assert t2.calls == 0  # same key: no teacher forward at all
    torch.testing.assert_close(f2, f)
    assert torch.equal(y2, y)


def test_features_are_the_teachers_on_its_own_open_clip_transform(tmp_path, tiny_teacher, toy_splits):
    """PSC extracts with the teacher spec's transform: the same tensors as open_clip's own ``teacher.preprocess``."""
    ds = toy_splits.val
    f, _ = extract_features(tiny_teacher, ds, tmp_path, key_extra={"split": "val"}, batch_size=len(ds),
                            progress=False)
    x = torch.stack([tiny_teacher.preprocess(ds.load_image(i)) for i in range(len(ds))])
    assert torch.equal(f, tiny_teacher.encode_image(x))


def test_changes_invalidate(tmp_path, tiny_teacher, toy_splits):
    from pand.models.teacher import create_teacher

    ds = toy_splits.val
    cache = tmp_path / "cache"
    base, _ = extract_features(tiny_teacher, ds, cache, key_extra={"split": "val"}, progress=False)

    # another transform (other normalisation) -> recomputed, different features
    t = Counting(tiny_teacher)
    t.preprocess_spec = dataclasses.replace(tiny_teacher.preprocess_spec, mean=(0.5, 0.5, 0.5))
    f, _ = extract_features(t, ds, cache, key_extra={"split": "val"}, progress=False)
    assert t.images == len(ds) and not torch.allclose(f, base)

    # another teacher (other weights) -> recomputed
    other = Counting(create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 1}))
    extract_features(other, ds, cache, key_extra={"split": "val"}, progress=False)
    assert other.images == len(ds)

    # other samples (a subset) and another key_extra -> recomputed
    for kwargs, data in (({"split": "val"}, ds.subset([0, 1, 2])), ({"split": "val", "v": 2}, ds)):
        c = Counting(tiny_teacher)
        extract_features(c, data, cache, key_extra=kwargs, progress=False)
        assert c.images == len(data)
    assert len(list(cache.glob("*.safetensors"))) == 5

    # the original key is still served from the cache
    c = Counting(tiny_teacher)
    again, _ = extract_features(c, ds, cache, key_extra={"split": "val"}, progress=False)
    assert c.calls == 0 and torch.allclose(again, base)


def test_damaged_cache_is_recomputed(tmp_path, tiny_teacher, toy_splits):
    ds = toy_splits.test
    f, _ = extract_features(tiny_teacher, ds, tmp_path, key_extra={"split": "test"}, progress=False)
    (path,) = list(tmp_path.glob("*.safetensors"))
    path.write_bytes(b"garbage")
    c = Counting(tiny_teacher)
    with pytest.warns(UserWarning, match="unreadable"):
        f2, _ = extract_features(c, ds, tmp_path, key_extra={"split": "test"}, progress=False)
    assert c.images == len(ds)
    torch.testing.assert_close(f2, f)


def test_describe_transform_is_stable(tiny_teacher):
    a = describe_transform(tiny_teacher.preprocess)
    b = describe_transform(copy.deepcopy(tiny_teacher.preprocess))
    assert a == b and " at 0x" not in describe_transform(lambda x: x)


def test_cache_path_names_dataset_and_split(tmp_path):
    p = feature_cache_path(tmp_path, {"dataset": "cub/train", "split": "train", "x": 1})
    assert p.parent == tmp_path and p.name.startswith("cub_train-train-") and p.suffix == ".safetensors"
