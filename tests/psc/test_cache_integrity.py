"""Issue 20 item 6 (and 5 for caches): the PSC feature cache and the NSD teacher cache are keyed on file content,
verified by a per-file checksum on load, refuse NaN features, and are locked while built; a non-finite loss stops
Stage PSC naming the step unless trainer.skip_nonfinite_steps=true."""
import os
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pand.errors import PandError
from pand.psc.features import extract_features, feature_cache_path
from pand.utils.io import load_tensors, save_tensors
from pand.utils.lock import LockedError, exclusive_lock


class Counting:
    def __init__(self, teacher):
        self._t, self.images = teacher, 0

    def __getattr__(self, name):
        return getattr(self._t, name)

    def encode_image(self, x):
        self.images += x.shape[0]
        return self._t.encode_image(x)


def _extract(t, ds, cache):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = extract_features(t, ds, cache, key_extra={"split": "train"}, batch_size=8, progress=False)
    return out, [str(x.message) for x in w]


def _only_file(cache):
    (path,) = [p for p in cache.iterdir() if p.suffix == ".safetensors"]
    return path


def test_psc_cache_keyed_on_content_and_verified_on_load(tmp_path, tiny_teacher, toy_splits):
    ds = toy_splits.train.subset(range(6))
    cache = tmp_path / "cache"
    t = Counting(tiny_teacher)
    (f0, y0), _ = _extract(t, ds, cache)
    assert t.images == 6
    path = _only_file(cache)
    # tampering with the stored file: permuted rows, a zeroed row, a NaN -> checksum mismatch, recomputed
    tensors, meta = load_tensors(path)
    for bad in (tensors["features"].flip(0), tensors["features"] * 0, tensors["features"].clone().fill_(float("nan"))):
        save_tensors(path, {"features": bad, "labels": tensors["labels"]}, meta)
        (f, y), msgs = _extract(t, ds, cache)
        assert any("fails its checksum" in m for m in msgs), msgs
        assert torch.equal(f, f0) and torch.equal(y, y0)
    n = t.images
    _extract(t, ds, cache)
    assert t.images == n  # the rewritten file is trusted again
    # an image rewritten in place (same path, same label) gets new features: the key covers size + mtime
    img_path = ds.samples[0][0]
    Image.fromarray(np.full((20, 20, 3), 7, np.uint8)).save(img_path)
    os.utime(img_path, ns=(time.time_ns(), time.time_ns() + 10_000_000_000))
    (f2, _), _ = _extract(t, ds, cache)
    assert t.images == n + 6 and not torch.equal(f2[0], f0[0]) and torch.equal(f2[1:], f0[1:])


def test_psc_cache_refuses_nan_features_naming_the_image(tmp_path, tiny_teacher, toy_splits):
    ds = toy_splits.train.subset(range(4))

    class NaNTeacher(Counting):
        def encode_image(self, x):
            f = self._t.encode_image(x).clone()
            f[1] = float("nan")
            return f

    with pytest.raises(PandError, match=rf"NaN/inf features for 1 image\(s\), e.g. {ds.samples[1][0]}"):
        extract_features(NaNTeacher(tiny_teacher), ds, tmp_path, key_extra={"split": "train"}, progress=False)
    assert not list(tmp_path.glob("*.safetensors"))


def test_psc_cache_entry_is_locked_while_built(tmp_path, tiny_teacher, toy_splits):
    ds = toy_splits.train.subset(range(4))
    from pand.psc.features import _cache_meta

    path = feature_cache_path(tmp_path, _cache_meta(tiny_teacher, ds, {"split": "train"}))
    with exclusive_lock(path.with_name(path.name + ".lock"), "x", "y"):
        with pytest.raises(LockedError, match=rf"feature cache entry .* in use by process {os.getpid()}"):
            extract_features(tiny_teacher, ds, tmp_path, key_extra={"split": "train"}, progress=False)


def test_psc_nonfinite_loss_stops_naming_the_step_or_is_skipped(tmp_path, tiny_teacher, toy_splits):
    from pand.psc.prompt_learner import build_coop_text_model
    from pand.config.schema import PSCCfg
    from pand.psc.loop import train_coop

    cfg = PSCCfg(optimizer="sgd", lr=0.002, momentum=0.9, weight_decay=0.0, epochs=2, batch_size=4, warmup_epochs=0,
                 patience=0, grad_clip=1.0)
    d = tiny_teacher.embed_dim
    x = torch.nn.functional.normalize(torch.randn(8, d, generator=torch.Generator().manual_seed(0)), dim=1)
    x[5] = float("nan")
    y = torch.arange(8) % len(toy_splits.class_names)

    def model():
        return build_coop_text_model(tiny_teacher.model, tiny_teacher.tokenizer, toy_splits.class_names, n_ctx=2,
                                     seed=0)

    with pytest.raises(PandError, match=r"non-finite loss at epoch 0 step \d of Stage PSC \(loss = nan; the features hold NaN/inf\).*"
                                        r"skip_nonfinite_steps=true"):
        train_coop(model(), (x, y), None, cfg, 100.0, tmp_path / "a", progress=False)
    with pytest.warns(UserWarning, match="step skipped"):
        res = train_coop(model(), (x, y), None, cfg, 100.0, tmp_path / "b", progress=False, skip_nonfinite=True)
    assert [h["skipped_steps"] for h in res.history] == [1, 1] and bool(torch.isfinite(res.best_ctx).all())


def swap_keeping_times(a, b):
    """Swap the bytes of two same-size files and restore both modification times (as ``cp -p`` / ``rsync -a``)."""
    sa, sb = os.stat(a), os.stat(b)
    da, db = open(a, "rb").read(), open(b, "rb").read()
    assert len(da) == len(db)
    open(a, "wb").write(db)
    open(b, "wb").write(da)
    os.utime(a, ns=(sa.st_atime_ns, sa.st_mtime_ns))
    os.utime(b, ns=(sb.st_atime_ns, sb.st_mtime_ns))
    assert (os.stat(a).st_size, os.stat(a).st_mtime_ns) == (sa.st_size, sa.st_mtime_ns)


def test_psc_cache_sees_same_size_files_swapped_with_their_mtimes_restored(tmp_path, tiny_teacher):
    """Issue 31 item 6: the key is the files' content, not (size, mtime)."""
    from pand.data.base import FGVCDataset

    samples = []
    for k, value in enumerate((10, 240)):  # two classes, same size (uncompressed PNG), different pixels
        path = tmp_path / f"c{k}.png"
        Image.fromarray(np.full((24, 24, 3), value, np.uint8)).save(path, compress_level=0)
        samples.append((str(path), k))
    ds = FGVCDataset(samples, ["dark", "light"], name="swap")
    t = Counting(tiny_teacher)
    (f0, _), _ = _extract(t, ds, tmp_path / "cache")
    swap_keeping_times(samples[0][0], samples[1][0])
    (f1, _), _ = _extract(t, ds, tmp_path / "cache")
    assert t.images == 4  # recomputed, not the stale entry
    assert torch.allclose(f1[0], f0[1], atol=1e-5) and torch.allclose(f1[1], f0[0], atol=1e-5)
