"""Held-out validation, label budget and base-to-novel split (pure functions and through build_splits)."""
from __future__ import annotations

import math
from collections import Counter

import pytest
from omegaconf import OmegaConf

from pand.config.schema import DataCfg
from pand.data import build_splits
from pand.data.splits import base_novel_split, holdout_count, label_budget, stratified_holdout

LABELS = [c for c in range(7) for _ in range(3 + 4 * c)]  # class c has 3 + 4c images (3..27)


def test_holdout_count_rules():
    assert holdout_count(1, 0.1) == 0  # a single image stays in train
    assert holdout_count(2, 0.1) == 1  # >= 2 images: at least one val image ...
    assert holdout_count(5, 0.9) == 4  # ... and at least one train image
    assert holdout_count(30, 0.1) == 3
    assert holdout_count(30, 0.0) == 0


def test_stratified_holdout_partition_and_strata():
    tr, va = stratified_holdout(LABELS, 0.25, seed=0)
    assert not set(tr) & set(va) and sorted(tr + va) == list(range(len(LABELS)))
    got = Counter(LABELS[i] for i in va)
    per_class = Counter(LABELS)
    for c, n in per_class.items():
        assert got[c] == holdout_count(n, 0.25) >= 1


def test_stratified_holdout_seeded():
    a = stratified_holdout(LABELS, 0.2, seed=3)
    assert stratified_holdout(LABELS, 0.2, seed=3) == a
    assert stratified_holdout(LABELS, 0.2, seed=4)[1] != a[1]


def test_holdout_of_a_class_ignores_other_classes():
    # class 6's val images do not change when other classes are removed (per-class random streams)
    only6 = [y for y in LABELS if y == 6]
    offset = LABELS.index(6)
    _, va_all = stratified_holdout(LABELS, 0.2, seed=1)
    _, va_one = stratified_holdout(only6, 0.2, seed=1)
    assert [i - offset for i in va_all if LABELS[i] == 6] == va_one


def test_label_budget():
    keep = label_budget(LABELS, 5, seed=0)
    got = Counter(LABELS[i] for i in keep)
    assert all(got[c] == min(5, n) for c, n in Counter(LABELS).items())
    assert label_budget(LABELS, 5, seed=0) == keep and label_budget(LABELS, 5, seed=1) != keep
    with pytest.raises(ValueError):
        label_budget(LABELS, 0, seed=0)


@pytest.mark.parametrize("c", [1, 2, 7, 24, 37, 200])
def test_base_novel_split(c):
    base, novel = base_novel_split(list(range(c))[::-1])
    assert base == list(range(math.ceil(c / 2))) and novel == list(range(math.ceil(c / 2), c))


def _cfg(root, **kw):
    return OmegaConf.structured(DataCfg(name="cub_200_2011", root=str(root), **kw))


def test_build_splits_holdout_never_touches_test(cub_root):
    root, exp = cub_root
    full = build_splits(_cfg(root, val_fraction=0.0))
    s = build_splits(_cfg(root, val_fraction=0.34, val_seed=0))
    train, val, test = ({p for p, _ in d.samples} for d in (s.train, s.val, s.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val == {p for p, _ in full.train.samples}
    assert s.test.samples == full.test.samples
    assert Counter(s.val.targets) == {0: 2, 1: 2, 2: 2}  # round(0.34 * 6) per class
    again = build_splits(_cfg(root, val_fraction=0.34, val_seed=0))
    other = build_splits(_cfg(root, val_fraction=0.34, val_seed=1))
    assert again.val.samples == s.val.samples
    assert other.val.samples != s.val.samples and other.test.samples == s.test.samples


def test_build_splits_label_budget_after_holdout(cub_root):
    root, _ = cub_root
    s = build_splits(_cfg(root, val_fraction=0.34, labels_per_class=3))
    ref = build_splits(_cfg(root, val_fraction=0.34))
    assert Counter(s.train.targets) == {0: 3, 1: 3, 2: 3}
    assert s.val.samples == ref.val.samples  # the budget does not change validation
    assert {p for p, _ in s.train.samples} <= {p for p, _ in ref.train.samples}
    big = build_splits(_cfg(root, val_fraction=0.34, labels_per_class=100))
    assert big.train.samples == ref.train.samples
