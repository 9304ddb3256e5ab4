"""pand.engine.loaders: the seeded per-epoch order and the DataLoader settings."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from pand.engine.loaders import epoch_permutation, index_batches, loader_kwargs


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
