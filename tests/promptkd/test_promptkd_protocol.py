"""Base-to-novel split, unlabeled pools (inductive / transductive), metrics and the LR schedule."""
from __future__ import annotations

import math

import pytest
import torch

from pand.errors import DataError
from pand.promptkd.protocol import (
    UnlabeledDataset,
    build_pool,
    check_base_novel,
    harmonic_mean,
    promptkd_lr,
    resolve_base_novel,
    subset_accuracy,
)

from pk_splits import tiny_splits


def _splits(tmp_path, num_classes=5, base=None, novel=None, with_test=True):
    return tiny_splits(tmp_path, num_classes, base, novel, with_test)


def test_base_novel_is_first_ceil_half(tmp_path):
    assert resolve_base_novel(_splits(tmp_path, 5)) == ([0, 1, 2], [3, 4])
    assert resolve_base_novel(_splits(tmp_path, 4)) == ([0, 1], [2, 3])
    # the data layer's own split (e.g. the synthetic benchmark's) wins when present
    assert resolve_base_novel(_splits(tmp_path, 4, base=[2, 0], novel=[3, 1])) == ([0, 2], [1, 3])


def test_empty_side_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="empty side"):
        resolve_base_novel(_splits(tmp_path, 1))
    with pytest.raises(DataError, match="empty side"):
        check_base_novel([0, 1], [])
    with pytest.raises(DataError, match="overlap"):
        check_base_novel([0, 1], [1, 2])


def test_inductive_pool_has_no_novel_class_and_no_test_image(tmp_path):
    splits = _splits(tmp_path, 5)
    base, novel = resolve_base_novel(splits)
    pool, parts = build_pool(splits, "inductive", base)
    labels = [y for part in parts for _, y in part.samples]
    assert set(labels) == set(base) and not set(labels) & set(novel)
    test_paths = {p for p, _ in splits.test.samples}
    assert not set(pool.paths) & test_paths
    assert len(pool) == 3 * len(base)
    # the pool hands out images with a -1 placeholder label: the true labels are not reachable from training
    img, label = pool[0]
    assert label == -1 and hasattr(img, "size")


def test_transductive_pool_adds_every_class_and_the_test_images(tmp_path):
    splits = _splits(tmp_path, 5)
    base, _ = resolve_base_novel(splits)
    pool, parts = build_pool(splits, "transductive", base)
    assert len(pool) == len(splits.train) + len(splits.test)
    assert {p for p, _ in splits.test.samples} <= set(pool.paths)
    assert {y for part in parts for _, y in part.samples} == set(range(5))


def test_transductive_without_test_split_and_unknown_regime(tmp_path):
    splits = _splits(tmp_path, 4, with_test=False)
    with pytest.raises(DataError, match="no test split"):
        build_pool(splits, "transductive", [0, 1])
    with pytest.raises(DataError, match="Valid choices: reference, inductive, transductive"):
        build_pool(splits, "semi", [0, 1])


def test_pool_applies_the_transform_and_indexes_across_parts(tmp_path):
    splits = _splits(tmp_path, 2)
    pool, _ = build_pool(splits, "transductive", [0], transform=lambda im: im.size)
    assert pool[0] == ((8, 8), -1) and pool[len(pool) - 1] == ((8, 8), -1)
    with pytest.raises(IndexError):
        pool[len(pool)]
    assert len(UnlabeledDataset([])) == 0


def test_harmonic_mean():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(50.0, 50.0) == pytest.approx(50.0)


def test_subset_accuracy_classifies_among_the_subset_only():
    T = torch.eye(4)
    # image 0 (label 2) is closest to class 0 overall, but among the novel classes {2, 3} it is right
    feats = torch.tensor([[0.9, 0.0, 0.5, 0.1], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.1, 0.9]])
    labels = torch.tensor([2, 1, 2])
    acc, n = subset_accuracy(feats, labels, T, [2, 3])
    assert n == 2 and acc == pytest.approx(50.0)
    acc_all, n_all = subset_accuracy(feats, labels, T, [0, 1, 2, 3])
    assert n_all == 3 and acc_all == pytest.approx(100.0 / 3)
    assert subset_accuracy(feats, labels, T, [0]) == (0.0, 0)


def test_lr_schedule_constant_warmup_then_cosine():
    lrs = [promptkd_lr(e, 0.005, 20, 1, 1e-5) for e in range(20)]
    assert lrs[0] == 1e-5
    assert lrs[1] == pytest.approx(0.005)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    assert lrs[-1] == pytest.approx(0.005 * 0.5 * (1 + math.cos(math.pi * 18 / 20))) and lrs[-1] > 0
    assert promptkd_lr(0, 0.01, 5, 0) == pytest.approx(0.01)
