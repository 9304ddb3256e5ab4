"""NSD teacher-feature cache with augmentation replay (pand.nsd.teacher_cache).

What "identical" means here. The cache stores the live teacher's output for the replayed pixels of ``(i, v)``.
* ``dtype=fp32``: cached features are compared bit for bit with the live teacher's features of the training batch,
  and every loss term (CE, L1, KL, NLRD) and a whole ``fit`` run (per-epoch terms, final weights) are bit-identical.
  This needs a teacher whose per-sample output does not depend on the batch it is in; the conftest ``FakeTeacher``
  (pool + matmul) is. A real open_clip ViT can differ by ~1 ulp between batch compositions (CPU BLAS blocking),
  so for it the comparison is ``allclose`` (``test_real_open_clip_teacher_matches_up_to_batch_rounding``).
* ``dtype=fp16`` (the default): cached features equal the live features *rounded through fp16*
  (``f.half().float()``), and the loss terms computed from them equal, bit for bit, the terms computed from the
  rounded live features. Against the unrounded live features they differ by at most the fp16 rounding.
"""
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pand.config import ConfigError
from pand.data import FGVCDataset
from pand.data.transforms import create_transform
from pand_runtime.preprocess_spec import PreprocessSpec
from pand.errors import ArtifactError, PandError
from pand.nsd import LiveTeacher, NSDCriterion, build_models, fit
from pand.engine.loaders import IndexedDataset, make_train_loader, replay_views
from pand.nsd.teacher_cache import (
    CACHE_SUBDIR, CachedTeacher, TeacherFeatureCache, build_teacher_cache, maybe_cache_teacher,
)
from pand.utils.distributed import DistInfo

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 4


def _png_dataset(root: Path, per_class: int, seed: int, transform, name: str) -> FGVCDataset:
    """``per_class`` 20x20 PNGs per class: a class colour plus noise (real files through the real transform)."""
    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(123).uniform(40, 215, size=(NUM_CLASSES, 3))
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for c in range(NUM_CLASSES):
        for k in range(per_class):
            img = np.clip(colours[c] + rng.normal(0, 40, size=(20, 20, 3)), 0, 255).astype(np.uint8)
            path = root / f"c{c}_{k}.png"
            Image.fromarray(img).save(path)
            samples.append((str(path), c))
    return FGVCDataset(samples, [f"class{c}" for c in range(NUM_CLASSES)], transform=transform, name=name)


@pytest.fixture
def data(tmp_path, toy):
    pp = PreprocessSpec(image_size=12, resize_size=14, interpolation="bilinear", mean=toy.mean, std=toy.std)
    train_tf = create_transform(pp, True, "standard", (0.3, 1.0))
    eval_tf = create_transform(pp, False)
    splits = SimpleNamespace(
        train=_png_dataset(tmp_path / "img" / "train", 4, 1, train_tf, "png-train"),  # 16 images
        val=_png_dataset(tmp_path / "img" / "val", 2, 2, eval_tf, "png-val"),
        test=_png_dataset(tmp_path / "img" / "test", 2, 3, eval_tf, "png-test"),
        class_names=[f"class{c}" for c in range(NUM_CLASSES)],
    )
    return SimpleNamespace(splits=splits, pp=pp, cache=tmp_path / "cache")


def _live(toy, **kw):
    return LiveTeacher(toy.FakeTeacher(image_size=16, **kw), toy.mean, toy.std)


class _Crash(Exception):
    pass


class _CrashingTeacher:
    """Wraps a teacher and raises on the ``n``-th ``encode_image`` call (a crash mid-build)."""

    def __init__(self, teacher, n):
        self.__dict__.update({k: v for k, v in vars(teacher).items() if k != "seen"})
        self.inner, self.n, self.calls = teacher, n, 0

    def encode_image(self, x):
        self.calls += 1
        if self.calls >= self.n:
            raise _Crash
        return self.inner.encode_image(x)


# -- parity with the live teacher ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_cached_and_live_losses_identical_for_same_batch_and_view(toy, data, dtype):
    cfg = toy.make_cfg("recipe=pand", "nsd.epochs=6")
    live = _live(toy)
    root = build_teacher_cache(live, data.splits.train, data.cache, seed=0, views=3, dtype=dtype, batch_size=5,
                               progress=False)
    cached = CachedTeacher(root)
    loader = make_train_loader(data.splits.train, 8, 0, DistInfo(), cfg.trainer, "cpu")
    anchors = toy.make_anchors()
    model = build_models(cfg.student, cfg.recipe, NUM_CLASSES, live.embed_dim, torch.device("cpu")).eval()
    crit = NSDCriterion.from_config(cfg.nsd, cfg.recipe)
    for epoch in (0, 4):  # epoch 4 is in the second cycle of V = 3 epochs: redrawn view orders
        views = cached.views(epoch, len(data.splits.train))
        loader.sampler.set_epoch(epoch, views)
        cached.set_epoch(epoch)
        images, labels, indices = next(iter(loader))
        assert len(set(views[indices.numpy()].tolist())) > 1  # one batch mixes views: a view per image per step
        f_live, f_cached = live.features(images, indices), cached.features(images, indices)
        assert f_cached.dtype == torch.float32 and f_cached.device == images.device
        f_ref = f_live if dtype == "fp32" else f_live.half().float()
        assert torch.equal(f_cached, f_ref)
        if dtype == "fp16":
            err = (f_cached - f_live).abs().max().item()
            assert 0 < err <= 1e-3  # fp16 storage really rounds, and only by the rounding
        with torch.no_grad():
            total_r, terms_r, _ = crit(model(images, f_ref, anchors), labels, f_ref, anchors, epoch)
            total_c, terms_c, _ = crit(model(images, f_cached, anchors), labels, f_cached, anchors, epoch)
        assert set(terms_c) == {"ce", "l1", "kl", "nlrd"}
        for name in terms_c:
            assert torch.equal(terms_c[name], terms_r[name]), name
        assert torch.equal(total_c, total_r)


class _LiveOnSchedule(LiveTeacher):
    """The live teacher, run on every step, on the per-image view schedule a V-view cache uses."""

    def __init__(self, teacher, mean, std, seed, views):
        super().__init__(teacher, mean, std)
        self.seed, self.num_views = seed, views

    def views(self, epoch, count):
        return replay_views(self.seed, epoch, count, self.num_views)


def test_fit_with_fp32_cache_is_bit_identical_to_live_on_the_same_views_and_reuses_cache(toy, data, tmp_path):
    base = ["recipe=pand", "nsd.epochs=3", f"cache_dir={data.cache}"]
    anchors = toy.make_anchors()
    teacher_live = toy.FakeTeacher(image_size=16)
    ref = fit(toy.make_cfg(*base), tmp_path / "live", data.splits, LiveTeacher(teacher_live, toy.mean, toy.std),
              anchors)
    n = len(data.splits.train)
    assert sum(x.shape[0] for x in teacher_live.seen) == 3 * (n // 8) * 8  # 3 epochs of full batches

    cfg = toy.make_cfg(*base, "nsd.teacher_cache.views=3", "nsd.teacher_cache.dtype=fp32")
    teacher = toy.FakeTeacher(image_size=16)
    res = fit(cfg, tmp_path / "cached", data.splits, LiveTeacher(teacher, toy.mean, toy.std), anchors)
    assert sum(x.shape[0] for x in teacher.seen) == 3 * n  # V views of every image, once, then never again
    # the reference: the live teacher run on every step, fed the same per-image view schedule as the cache
    ref = fit(toy.make_cfg(*base), tmp_path / "live-same-views", data.splits,
              _LiveOnSchedule(toy.FakeTeacher(image_size=16), toy.mean, toy.std, seed=0, views=3), anchors)
    live_ep = toy.epochs(tmp_path / "live-same-views")
    terms = ("loss", "ce", "l1", "kl", "nlrd")
    cached_ep = toy.epochs(tmp_path / "cached")
    assert [[r[k] for k in terms] for r in cached_ep] == [[r[k] for k in terms] for r in live_ep]
    assert res.test_top1 == ref.test_top1 and res.best_epoch == ref.best_epoch
    for k, v in ref.student_state.items():
        assert torch.equal(v, res.student_state[k]), k
    assert len(list((data.cache / CACHE_SUBDIR).iterdir())) == 1

    again = toy.FakeTeacher(image_size=16)
    fit(cfg, tmp_path / "cached2", data.splits, LiveTeacher(again, toy.mean, toy.std), anchors)
    assert again.seen == []  # second run: no teacher forward at all


def test_fit_with_fp16_cache_stays_close_to_live(toy, data, tmp_path):
    base = ["recipe=pand", "nsd.epochs=2", f"cache_dir={data.cache}"]
    anchors = toy.make_anchors()
    fit(toy.make_cfg(*base), tmp_path / "live", data.splits,
        _LiveOnSchedule(toy.FakeTeacher(image_size=16), toy.mean, toy.std, seed=0, views=2), anchors)
    fit(toy.make_cfg(*base, "nsd.teacher_cache.views=2"), tmp_path / "fp16", data.splits, _live(toy), anchors)
    live_ep = toy.epochs(tmp_path / "live")
    half_ep = toy.epochs(tmp_path / "fp16")
    for a, b in zip(live_ep, half_ep):
        for k in ("loss", "ce", "l1", "kl", "nlrd"):
            assert b[k] == pytest.approx(a[k], rel=1e-2, abs=1e-3), k


def test_real_open_clip_teacher_matches_up_to_batch_rounding(toy, data):
    from pand.models.teacher import create_teacher

    teacher = create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 0})
    live = LiveTeacher(teacher, toy.mean, toy.std)
    cached = CachedTeacher(build_teacher_cache(live, data.splits.train, data.cache, seed=0, views=2, dtype="fp32",
                                               batch_size=7, progress=False))
    ds = IndexedDataset(data.splits.train, 0)
    idx = torch.tensor([3, 11, 0, 7, 15])
    views = cached.views(1, len(ds))
    images = torch.stack([ds[(int(i), int(views[i]))][0] for i in idx])
    cached.set_epoch(1)
    assert torch.allclose(cached.features(images, idx), live.features(images, idx), rtol=0, atol=1e-5)


# -- reuse, invalidation, sharding, resumability --------------------------------------------------------------
def test_reuse_and_invalidation_on_every_key_part(toy, data):
    ds = data.splits.train
    first = _live(toy)
    root = build_teacher_cache(first, ds, data.cache, seed=0, views=2, progress=False)
    assert first.teacher.seen
    same = _live(toy)
    assert build_teacher_cache(same, ds, data.cache, seed=0, views=2, progress=False) == root
    assert same.teacher.seen == []

    other_tf = ds.with_transform(create_transform(data.pp, True, "standard", (0.6, 1.0)))
    variants = {
        "seed": (_live(toy), ds, dict(seed=1, views=2)),
        "views": (_live(toy), ds, dict(seed=0, views=3)),
        "dtype": (_live(toy), ds, dict(seed=0, views=2, dtype="fp32")),
        "teacher": (_live(toy, seed=7), ds, dict(seed=0, views=2)),
        "samples": (_live(toy), ds.subset(range(12)), dict(seed=0, views=2)),
        "transform": (_live(toy), other_tf, dict(seed=0, views=2)),
    }
    roots = {root}
    for name, (live, dataset, kw) in variants.items():
        r = build_teacher_cache(live, dataset, data.cache, progress=False, **kw)
        assert r not in roots, name
        assert live.teacher.seen, name  # a new key means a new teacher pass
        roots.add(r)
    assert len(list((data.cache / CACHE_SUBDIR).iterdir())) == len(variants) + 1


def test_sharding_and_lookup_across_shards(toy, data):
    live = _live(toy)
    ds = data.splits.train.subset(range(10))
    root = build_teacher_cache(live, ds, data.cache, seed=3, views=2, shard_size=4, dtype="fp32", progress=False)
    cache = TeacherFeatureCache(root)
    assert [tuple(m.shape) for m in cache.shards] == [(4, 2, 8), (4, 2, 8), (2, 2, 8)]
    assert sorted(p.name for p in root.glob("shard-*.safetensors")) == [f"shard-0000{s}.safetensors" for s in range(3)]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == 10 and manifest["views"] == 2
    indexed = IndexedDataset(ds, 3)
    idx = [9, 0, 5, 3, 8]
    for view in (0, 1):
        images = torch.stack([indexed[(i, view)][0] for i in idx])
        assert torch.equal(cache.lookup(idx, view), live.features(images, torch.tensor(idx)))
    mixed = [1, 0, 0, 1, 1]  # one view per index
    images = torch.stack([indexed[(i, v)][0] for i, v in zip(idx, mixed)])
    assert torch.equal(cache.lookup(idx, mixed), live.features(images, torch.tensor(idx)))
    with pytest.raises(PandError, match="views 0..1"):
        cache.lookup(idx, 2)
    with pytest.raises(PandError, match="5 indices but 2 views"):
        cache.lookup(idx, [0, 1])
    with pytest.raises(PandError, match="holds 10 images"):
        cache.lookup([10], 0)


def test_crash_mid_build_keeps_finished_shards(toy, data):
    ds = data.splits.train  # 16 images, shard_size 4 -> 4 shards; batch 4 x 2 views -> 2 teacher calls per shard
    crashing = LiveTeacher(_CrashingTeacher(toy.FakeTeacher(image_size=16), n=6), toy.mean, toy.std)
    with pytest.raises(_Crash):
        build_teacher_cache(crashing, ds, data.cache, seed=0, views=2, shard_size=4, batch_size=4, progress=False)
    root = next((data.cache / CACHE_SUBDIR).iterdir())
    assert sorted(p.name for p in root.glob("shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not (root / "manifest.json").exists() and not list(root.glob(".*tmp"))
    with pytest.raises(ArtifactError, match="not a complete"):
        TeacherFeatureCache(root)

    resumed = _live(toy)
    assert build_teacher_cache(resumed, ds, data.cache, seed=0, views=2, shard_size=4, batch_size=4,
                               progress=False) == root
    assert sum(x.shape[0] for x in resumed.teacher.seen) == 8 * 2  # only the 2 missing shards x 2 views
    fresh = TeacherFeatureCache(build_teacher_cache(_live(toy), ds, data.cache / "fresh", seed=0, views=2,
                                                    shard_size=4, batch_size=4, progress=False))
    got = TeacherFeatureCache(root)
    for view in (0, 1):
        assert torch.equal(got.lookup(range(16), view), fresh.lookup(range(16), view))


def test_damaged_shard_is_recomputed(toy, data):
    ds = data.splits.train
    root = build_teacher_cache(_live(toy), ds, data.cache, seed=0, views=2, shard_size=8, progress=False)
    good = TeacherFeatureCache(root).lookup(range(16), 1)
    shard = root / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated (e.g. copied half-way by hand)
    with pytest.raises(ArtifactError, match="shard-00001"), pytest.warns(UserWarning, match="unreadable"):
        TeacherFeatureCache(root)
    (root / "manifest.json").unlink()
    live = _live(toy)
    with pytest.warns(UserWarning, match="shard-00001"):
        build_teacher_cache(live, ds, data.cache, seed=0, views=2, shard_size=8, progress=False)
    assert sum(x.shape[0] for x in live.teacher.seen) == 8 * 2
    assert torch.equal(TeacherFeatureCache(root).lookup(range(16), 1), good)


def test_reads_are_memory_mapped(toy, data):
    live = LiveTeacher(toy.FakeTeacher(embed_dim=512, image_size=16), toy.mean, toy.std)
    root = build_teacher_cache(live, data.splits.train, data.cache, seed=0, views=16, progress=False)
    cache = TeacherFeatureCache(root)
    assert all(isinstance(m, np.memmap) and m.dtype == np.float16 and not m.flags.writeable for m in cache.shards)
    assert cache.nbytes() == 16 * 16 * 512 * 2  # N x V x D fp16; 10k x 16 x 1024 would be 328 MB
    assert (root / "shard-00000.safetensors").stat().st_size < cache.nbytes() + 4096
    cache.lookup([0], 0)  # warm up numpy's small allocations
    tracemalloc.start()
    try:
        rows = cache.lookup([5, 2], 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows.shape == (2, 512) and rows.dtype == torch.float32
    assert peak < cache.nbytes() // 16  # the batch's rows only (~4 KB), never the 256 KB array


# -- wiring and refusals ----------------------------------------------------------------------------------------
def test_maybe_cache_teacher_wiring_and_errors(toy, data):
    ds = data.splits.train
    live = _live(toy)
    assert maybe_cache_teacher(toy.make_cfg(f"cache_dir={data.cache}"), live, ds) is live  # views=0: live
    cfg = toy.make_cfg(f"cache_dir={data.cache}", "nsd.teacher_cache.views=2", "nsd.teacher_cache.shard_size=5")
    cached = maybe_cache_teacher(cfg, live, ds, progress=False)
    assert isinstance(cached, CachedTeacher) and cached.num_views == 2 and cached.embed_dim == live.embed_dim
    assert len(cached.cache.shards) == 4  # 16 images / 5 per shard
    assert maybe_cache_teacher(cfg, cached, ds) is cached
    assert maybe_cache_teacher(cfg, None, ds) is None
    with pytest.raises(ConfigError, match="views=-1"):
        maybe_cache_teacher(toy.make_cfg("nsd.teacher_cache.views=-1"), live, ds)
    with pytest.raises(ConfigError, match="resolve_views"):  # auto is decided (and recorded) before the hook
        maybe_cache_teacher(toy.make_cfg("nsd.teacher_cache.views=auto"), live, ds)
    with pytest.raises(ConfigError, match="nsd.teacher_cache.dtype"):
        toy.make_cfg("nsd.teacher_cache.dtype=bf16")

    class Other:
        embed_dim = 8

    with pytest.raises(PandError, match="caches a LiveTeacher"):
        maybe_cache_teacher(cfg, Other(), ds)
    with pytest.raises(PandError, match="'samples' list"):
        maybe_cache_teacher(cfg, live, toy.make_splits().train)
    with pytest.raises(PandError, match="shard_size=0"):
        build_teacher_cache(live, ds, data.cache, seed=0, views=2, shard_size=0)
    fresh = CachedTeacher(cached.cache)
    with pytest.raises(PandError, match="before set_epoch"):
        fresh.features(torch.zeros(2, 3, 12, 12), torch.tensor([0, 1]))


_DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch, torch.distributed as td
    sys.path.insert(0, {tests!r})
    from types import SimpleNamespace
    from conftest import FakeTeacher, make_cfg, STUDENT_MEAN, STUDENT_STD
    from pand.data import FGVCDataset
    from pand.data.transforms import create_transform
    from pand_runtime.preprocess_spec import PreprocessSpec
    from pand.nsd import LiveTeacher
    from pand.nsd.teacher_cache import maybe_cache_teacher
    from pand.utils.distributed import DistInfo

    rank = int(os.environ["RANK"])
    td.init_process_group("gloo", rank=rank, world_size=2)
    pp = PreprocessSpec(image_size=12, resize_size=14, mean=STUDENT_MEAN, std=STUDENT_STD)
    samples = [(p, i % 4) for i, p in enumerate(sorted(os.listdir({img!r})))]
    ds = FGVCDataset([(os.path.join({img!r}, p), y) for p, y in samples], list("abcd"),
                     create_transform(pp, True, "standard", (0.3, 1.0)))
    teacher = FakeTeacher(image_size=16)
    cfg = make_cfg("cache_dir=" + os.environ["TEST_CACHE"], "nsd.teacher_cache.views=2",
                   "nsd.teacher_cache.shard_size=" + os.environ["TEST_SHARD"])
    src = maybe_cache_teacher(cfg, LiveTeacher(teacher, STUDENT_MEAN, STUDENT_STD), ds,
                              DistInfo(rank=rank, world_size=2, local_rank=rank), progress=False)
    src.set_epoch(1)
    f = src.features(torch.zeros(4, 3, 12, 12), torch.tensor([0, 5, 9, 15]))
    print("RESULT", rank, sum(x.shape[0] for x in teacher.seen), f.sum().item(), flush=True)
    td.destroy_process_group()
""")


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("layout", ["one_shard", "shared", "per_node"])
def test_two_ranks_build_their_shards_and_read_the_same_features(toy, data, tmp_path, layout):
    """16 images x 2 views. ``one_shard``: one shard, so rank 0 encodes everything; ``shared``: 4 shards dealt
    round-robin into one directory; ``per_node``: each rank has its own cache_dir (node-local disks), so each
    encodes its share, does not see the other's, and completes its own copy with its own manifest."""
    script = tmp_path / "ddp_cache.py"
    script.write_text(_DDP_SCRIPT.format(tests=str(REPO / "tests" / "nsd"), img=str(tmp_path / "img" / "train")))
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(29500 + os.getpid() % 1000), WORLD_SIZE="2",
               TEST_SHARD="16" if layout == "one_shard" else "4")
    caches = [tmp_path / ("cache%d" % r if layout == "per_node" else "cache") for r in (0, 1)]
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=REPO,
                              env=dict(env, RANK=str(r), LOCAL_RANK="0", TEST_CACHE=str(caches[r])),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    res = [next(line.split() for line in out.splitlines() if line.startswith("RESULT")) for out, _ in outs]
    encoded = {"one_shard": (32, 0), "shared": (16, 16), "per_node": (32, 32)}[layout]
    assert (int(res[0][2]), int(res[1][2])) == encoded  # views each rank ran through the teacher
    assert res[0][3] == res[1][3]  # and both read the same features
    for cache in set(caches):
        (root,) = (cache / CACHE_SUBDIR).iterdir()
        assert (root / "manifest.json").is_file() and not list(root.glob(".*.tmp"))
    if layout == "per_node":
        assert "do not see the shards" in outs[0][1]
