"""Issue 20 items 5, 6: the NSD teacher-feature cache is keyed on file content, every shard carries a checksum
verified on reuse and on open, NaN features are refused naming the images, a build is locked; a non-finite NSD
step stops the run unless trainer.skip_nonfinite_steps=true, which skips and counts it."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pand.data import FGVCDataset
from pand.data.transforms import create_transform
from pand_runtime.preprocess_spec import PreprocessSpec
from pand.errors import ArtifactError, PandError
from pand.nsd import LiveTeacher, fit
from pand.nsd.teacher_cache import TeacherFeatureCache, build_teacher_cache
from pand.utils.io import load_tensors, save_tensors
from pand.utils.lock import LOCK_NAME, LockedError, exclusive_lock

from nsd_sources import NaNAt


def _dataset(root: Path, toy, n=12) -> FGVCDataset:
    pp = PreprocessSpec(image_size=12, resize_size=14, interpolation="bilinear", mean=toy.mean, std=toy.std)
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for k in range(n):
        path = root / f"img_{k}.png"
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
        samples.append((str(path), k % 4))
    return FGVCDataset(samples, [f"class{c}" for c in range(4)], transform=create_transform(pp, True), name="png")


def _build(live, ds, cache):
    return build_teacher_cache(live, ds, cache, seed=0, views=2, shard_size=4, progress=False)


def test_tampered_shards_are_caught_by_their_checksum(toy, tmp_path):
    ds = _dataset(tmp_path / "img", toy)
    root = _build(LiveTeacher(toy.FakeTeacher(image_size=16), toy.mean, toy.std), ds, tmp_path / "cache")
    good = TeacherFeatureCache(root).lookup(range(12), 1)
    shard = root / "shard-00001.safetensors"
    t, meta = load_tensors(shard)
    nan = t["features"].clone()
    nan[2, 1, 0] = float("nan")
    for bad in (t["features"].flip(0), torch.zeros_like(t["features"]), nan):
        save_tensors(shard, {"features": bad}, meta)  # same header and metadata, other bytes
        with pytest.raises(ArtifactError, match="shard-00001"), pytest.warns(UserWarning, match="fails its checksum"):
            TeacherFeatureCache(root)  # opening never trusts it
        live = LiveTeacher(toy.FakeTeacher(image_size=16), toy.mean, toy.std)
        with pytest.warns(UserWarning, match="shard-00001.safetensors fails its checksum"):
            assert _build(live, ds, tmp_path / "cache") == root  # reuse verifies: only that shard is recomputed
        assert sum(x.shape[0] for x in live.teacher.seen) == 4 * 2
        assert torch.equal(TeacherFeatureCache(root).lookup(range(12), 1), good)


def test_image_rewritten_in_place_gets_a_new_cache(toy, tmp_path):
    ds = _dataset(tmp_path / "img", toy)
    live = LiveTeacher(toy.FakeTeacher(image_size=16), toy.mean, toy.std)
    root = _build(live, ds, tmp_path / "cache")
    path = ds.samples[3][0]
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000_000))
    root2 = _build(live, ds, tmp_path / "cache")
    assert root2 != root
    assert not torch.equal(TeacherFeatureCache(root2).lookup([3], 0), TeacherFeatureCache(root).lookup([3], 0))


def test_nan_teacher_features_are_refused_naming_the_image(toy, tmp_path):
    ds = _dataset(tmp_path / "img", toy)
    fake = toy.FakeTeacher(image_size=16)
    encode = fake.encode_image

    def nan_for_dark(x):
        f = encode(x).clone()
        f[0] = float("nan")
        return f

    fake.encode_image = nan_for_dark
    with pytest.raises(PandError, match=rf"NaN/inf features for \d+ training image\(s\), e.g. {ds.samples[0][0]}"):
        _build(LiveTeacher(fake, toy.mean, toy.std), ds, tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("shard-*.safetensors"))


def test_a_cache_entry_being_built_is_locked(toy, tmp_path):
    ds = _dataset(tmp_path / "img", toy)
    live = LiveTeacher(toy.FakeTeacher(image_size=16), toy.mean, toy.std)
    root = _build(live, ds, tmp_path / "cache")
    with exclusive_lock(root / LOCK_NAME, "x", "y"):
        assert _build(live, ds, tmp_path / "cache") == root  # a complete, verified entry is read without the lock
        (root / "manifest.json").unlink()  # incomplete: it has to be built, which needs the lock
        with pytest.raises(LockedError, match=rf"NSD teacher cache entry .* in use by process {os.getpid()}"):
            _build(live, ds, tmp_path / "cache")
    _build(live, ds, tmp_path / "cache")
    assert (root / "manifest.json").is_file()


def test_skip_nonfinite_steps_skips_and_counts(toy, tmp_path):
    cfg = toy.make_cfg("recipe=pand", "nsd.epochs=2", "trainer.skip_nonfinite_steps=true")
    source = NaNAt(LiveTeacher(toy.FakeTeacher(), toy.mean, toy.std), epoch=1, step=1)
    with pytest.warns(UserWarning, match=r"skipped \(trainer.skip_nonfinite_steps=true\): non-finite loss at "
                                         r"epoch 1 step 1"):
        res = fit(cfg, tmp_path, toy.make_splits(), source, toy.make_anchors())
    recs = toy.epochs(tmp_path)
    assert [r["skipped_steps"] for r in recs] == [0, 1] and recs[1]["steps"] == recs[0]["steps"] - 1
    assert all(bool(torch.isfinite(v).all()) for v in res.student_state.values() if v.is_floating_point())


def test_same_size_files_swapped_with_their_mtimes_restored_get_a_new_cache(toy, tmp_path):
    """Issue 31 item 6: the key is the files' content, not (size, mtime)."""
    ds = _dataset(tmp_path / "img", toy)
    a, b = ds.samples[0][0], ds.samples[1][0]
    for path, value in ((a, 10), (b, 240)):  # same size (uncompressed PNG), different pixels
        Image.fromarray(np.full((20, 20, 3), value, np.uint8)).save(path, compress_level=0)
    live = LiveTeacher(toy.FakeTeacher(image_size=16), toy.mean, toy.std)
    root = _build(live, ds, tmp_path / "cache")
    sa, sb = os.stat(a), os.stat(b)
    da, db = open(a, "rb").read(), open(b, "rb").read()
    open(a, "wb").write(db)
    open(b, "wb").write(da)
    os.utime(a, ns=(sa.st_atime_ns, sa.st_mtime_ns))
    os.utime(b, ns=(sb.st_atime_ns, sb.st_mtime_ns))
    root2 = _build(live, ds, tmp_path / "cache")
    assert root2 != root
    assert not torch.equal(TeacherFeatureCache(root2).lookup([0], 0), TeacherFeatureCache(root).lookup([0], 0))
