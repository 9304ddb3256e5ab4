"""Building blocks of the NSD engine: re-normalisation, replayable augmentation, samplers, checkpoints, heads."""
import random

import numpy as np
import pytest
import torch

from pand.models.align import AlignHeads, l2_normalize
from pand.engine.checkpoint import capture_rng, check_resume_config, config_diff, restore_rng
from pand.engine.loaders import IndexedDataset, ShardSampler, ViewSampler, mix_seed, replay_views
from pand.models.teacher_source import LiveTeacher, TeacherSource, renormalize
from pand.errors import ArtifactError


def test_renormalize_matches_manual_and_resizes():
    pixels = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    sm, ss, tm, ts = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    x = (pixels - torch.tensor(sm).view(1, 3, 1, 1)) / torch.tensor(ss).view(1, 3, 1, 1)
    want = (pixels - torch.tensor(tm).view(1, 3, 1, 1)) / torch.tensor(ts).view(1, 3, 1, 1)
    got = renormalize(x.float(), sm, ss, tm, ts, size=8)
    assert torch.allclose(got.double(), want, atol=1e-5)
    resized = renormalize(x.float(), sm, ss, tm, ts, size=(12, 10), interpolation="bilinear")
    assert resized.shape == (2, 3, 12, 10)
    # resize after the affine map == affine map of resized pixels
    ref = torch.nn.functional.interpolate(pixels.float(), size=(12, 10), mode="bilinear", antialias=True,
                                          align_corners=False)
    ref = (ref - torch.tensor(tm).view(1, 3, 1, 1)) / torch.tensor(ts).view(1, 3, 1, 1)
    assert torch.allclose(resized, ref.float(), atol=1e-5)


def test_live_teacher_is_a_teacher_source(toy):
    t = toy.FakeTeacher(image_size=16)
    src = LiveTeacher(t, toy.mean, toy.std)
    assert isinstance(src, TeacherSource) and src.views(7, 100) == 7
    f = src.features(torch.randn(3, 3, 12, 12), torch.arange(3))
    assert f.shape == (3, 8) and torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
    assert t.seen[-1].shape[-1] == 16
    LiveTeacher(t, toy.mean, toy.std, resize=False).features(torch.randn(1, 3, 12, 12), torch.arange(1))
    assert t.seen[-1].shape[-1] == 12


class _RandomDS(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.rand(2) + random.random() + float(np.random.rand()), i % 2


def test_indexed_dataset_replays_views_and_keeps_global_rng():
    ds = IndexedDataset(_RandomDS(), seed=3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = ds[(4, 1)]
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is untouched
    assert torch.equal(a[0], ds[(4, 1)][0]) and a[1:] == (0, 4)
    assert not torch.equal(a[0], ds[(4, 2)][0]) and not torch.equal(a[0], ds[(3, 1)][0])
    assert not torch.equal(a[0], IndexedDataset(_RandomDS(), seed=4)[(4, 1)][0])
    assert torch.equal(ds[4][0], ds[(4, 0)][0])


def test_mix_seed_is_stable():
    assert mix_seed(0, 1, 2) == mix_seed(0, 1, 2) != mix_seed(0, 2, 1)
    assert 0 <= mix_seed(2**70, -1) < 2**63


def test_shard_sampler_exact_cover_and_view_sampler():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11)) and [len(s) for s in shards] == [4, 4, 3]
    vs = ViewSampler(torch.utils.data.DistributedSampler(range(5), num_replicas=1, rank=0, shuffle=True, seed=1))
    vs.set_epoch(2, views=9)
    keys = list(vs)
    assert sorted(i for i, _ in keys) == list(range(5)) and {v for _, v in keys} == {9}
    per_image = [3, 0, 4, 1, 2]
    vs.set_epoch(3, views=per_image)
    assert sorted(vs) == [(i, per_image[i]) for i in range(5)]  # every index travels with its own view


def test_replay_views_cycle_through_every_view_in_a_per_image_order():
    n, v = 200, 4
    cycle0 = np.stack([replay_views(7, e, n, v) for e in range(v)], axis=1)  # [n, V]: epochs 0..3
    cycle1 = np.stack([replay_views(7, e, n, v) for e in range(v, 2 * v)], axis=1)
    assert (np.sort(cycle0, axis=1) == np.arange(v)).all()  # each view exactly once per cycle of V epochs
    assert (np.sort(cycle1, axis=1) == np.arange(v)).all()
    assert not (cycle0 == cycle1).all()  # orders are redrawn every cycle
    assert len({tuple(r) for r in cycle0}) > 10  # images have their own orders, so a batch mixes views
    assert np.bincount(replay_views(7, 0, n, v), minlength=v).min() > n // v // 2  # roughly uniform per epoch
    assert (replay_views(7, 5, n, v) == replay_views(7, 5, n, v)).all()  # pure: every rank/worker agrees
    assert not (replay_views(8, 5, n, v) == replay_views(7, 5, n, v)).all()
    assert (replay_views(7, 9, n, 1) == 0).all()
    with pytest.raises(ValueError, match="views >= 1"):
        replay_views(7, 0, n, 0)


def test_rng_capture_restore_roundtrip(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    state = capture_rng()
    torch.save(state, tmp_path / "s.pt")
    a = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    restore_rng(torch.load(tmp_path / "s.pt", weights_only=True))
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_config_diff_and_refusal():
    old = {"nsd": {"lr": 0.1, "nlrd": {"k": 3}}, "trainer": {"num_workers": 2}, "run_dir": "a"}
    new = {"nsd": {"lr": 0.2, "nlrd": {"k": 3}, "extra": 1}, "trainer": {"num_workers": 8}, "run_dir": "b"}
    assert config_diff(old, new) == [("nsd.extra", "<absent>", 1), ("nsd.lr", 0.1, 0.2)]
    check_resume_config(old, dict(old, run_dir="elsewhere"), "x")  # ignored keys only
    with pytest.raises(ArtifactError, match="nsd.lr: checkpoint=0.1 now=0.2"):
        check_resume_config(old, new, "x")


def test_align_heads_shapes_and_norms():
    heads = AlignHeads(teacher_dim=8, student_dim=5)
    a_img, a_txt = heads(torch.randn(4, 8), torch.randn(3, 8))
    assert a_img.shape == (4, 5) and a_txt.shape == (3, 5)
    assert torch.allclose(a_img.norm(dim=1), torch.ones(4), atol=1e-5)
    assert [type(m).__name__ for m in heads.img] == ["Linear", "ReLU", "Linear"]
    with pytest.raises(ValueError, match="teacher dim 8"):
        heads(torch.randn(4, 7), torch.randn(3, 7))
    assert l2_normalize(torch.zeros(2, 3)).abs().sum() == 0  # eps keeps zero vectors finite
    assert l2_normalize(torch.ones(1, 4, dtype=torch.bfloat16)).dtype == torch.float32
