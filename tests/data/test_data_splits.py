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


def test_unlabeled_rest_is_the_train_images_outside_the_label_budget(cub_root):
    from pand.data.base import UNLABELED

    root, exp = cub_root
    plain = build_splits(_cfg(root, val_fraction=0.34, labels_per_class=2))
    s = build_splits(_cfg(root, val_fraction=0.34, labels_per_class=2, unlabeled="rest"))
    assert plain.unlabeled is None and [x for x in s.train.samples] == plain.train.samples
    unl = [p for p, _ in s.unlabeled.samples]
    assert all(y == UNLABELED for _, y in s.unlabeled.samples) and len(unl) == len(set(unl)) > 0
    held = {p for p, _ in s.val.samples} | {p for p, _ in s.test.samples}
    assert not set(unl) & {p for p, _ in s.train.samples} and not set(unl) & held
    full = build_splits(_cfg(root, val_fraction=0.34))
    assert sorted(unl + [p for p, _ in s.train.samples]) == sorted(p for p, _ in full.train.samples)
    ts = s.transfer_set()
    assert ts.samples[:len(s.train)] == s.train.samples and len(ts) == len(s.train) + len(s.unlabeled)


def test_unlabeled_folder_and_its_errors(cub_root, tmp_path):
    import numpy as np
    from PIL import Image

    from pand.errors import DataError

    def write_image(path, seed):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(path)

    root, _ = cub_root
    folder = tmp_path / "extra"
    for k in range(3):
        write_image(folder / "sub" / f"x{k}.png", seed=100 + k)
    (folder / "readme.txt").write_text("not an image")
    s = build_splits(_cfg(root, unlabeled=str(folder)))
    assert sorted(p for p, _ in s.unlabeled.samples) == sorted(str(folder / "sub" / f"x{k}.png") for k in range(3))
    with pytest.raises(DataError, match="labels_per_class"):
        build_splits(_cfg(root, unlabeled="rest"))
    with pytest.raises(DataError, match="no such folder"):
        build_splits(_cfg(root, unlabeled=str(tmp_path / "missing")))
    with pytest.raises(DataError, match="unlabeled and (val|test) splits"):  # never an evaluation image
        build_splits(_cfg(root, unlabeled=str(root / "images")))
