"""pand.engine.loaders: the seeded per-epoch order, the DataLoader settings, replayable augmentation, samplers."""
from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pand.engine.loaders import (
    IndexedDataset, ShardSampler, ViewSampler, epoch_permutation, index_batches, loader_kwargs, mix_seed,
    replay_views,
)


def test_epoch_permutation_is_a_pure_function_of_seed_and_epoch():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = epoch_permutation(10, seed=3, epoch=2)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    torch.manual_seed(123)
    assert torch.equal(a, epoch_permutation(10, seed=3, epoch=2))
    assert sorted(a.tolist()) == list(range(10))
    assert not torch.equal(a, epoch_permutation(10, seed=3, epoch=3))
    assert torch.equal(a, torch.randperm(10, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2)))


def test_index_batches():
    assert [b.tolist() for b in index_batches(torch.arange(7), 3)] == [[0, 1, 2], [3, 4, 5], [6]]


def test_loader_kwargs():
    t = SimpleNamespace(num_workers=2, pin_memory=True, persistent_workers=True)
    assert loader_kwargs(t, "cuda") == dict(num_workers=2, pin_memory=True, persistent_workers=True)
    assert loader_kwargs(t, "cpu")["pin_memory"] is False
    t.num_workers = 0
    assert loader_kwargs(t, "cuda")["persistent_workers"] is False


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
