"""Every loader on a fixture that mimics the official layout: class names, counts, labels, official val."""
from __future__ import annotations

import os
from collections import Counter

import pytest
from omegaconf import OmegaConf

from pand.config.schema import DataCfg
from pand.data import build_splits, list_datasets, load_raw
from pand.data.layout import clean_class_name


def data_cfg(name, root, **kw):
    return OmegaConf.structured(DataCfg(name=name, root=str(root) if root is not None else None, **kw))


def _labels_by_file(samples):
    return {os.path.basename(p): y for p, y in samples}


def test_registry_lists_every_dataset():
    assert list_datasets() == sorted([
        "cub_200_2011", "fgvc_aircraft", "oxford_pets", "stanford_dogs", "stanford_cars", "flowers102", "dtd",
        "nabirds", "imagefolder", "synthetic"])


@pytest.mark.parametrize("raw,clean", [
    ("001.Black_footed_Albatross", "Black footed Albatross"),
    ("n02085782-Japanese_spaniel", "Japanese spaniel"),
    ("  Cessna  172 ", "Cessna 172"),
    ("Mallard (Female/Eclipse male)", "Mallard (Female/Eclipse male)"),
    ("737-200", "737-200"),
])
def test_clean_class_name(raw, clean):
    assert clean_class_name(raw) == clean
    assert clean_class_name(clean) == clean  # idempotent


def test_cub_joins_by_image_id(cub_root):
    root, exp = cub_root
    splits = build_splits(data_cfg("cub_200_2011", root, val_fraction=0.0))
    assert splits.class_names == exp["classes"]
    assert (len(splits.train), len(splits.test), splits.val) == (exp["train"], exp["test"], None)
    # the tables are written in different line orders; every image must keep its own class and split
    truth = {os.path.basename(rel): (c - 1, t) for _, rel, c, t in exp["rows"]}
    for split, flag in ((splits.train, 1), (splits.test, 0)):
        for path, y in split.samples:
            assert truth[os.path.basename(path)] == (y, flag)
            assert os.path.basename(os.path.dirname(path)).endswith(splits.class_names[y].replace(" ", "_"))


@pytest.mark.parametrize("level,key", [("variant", "classes"), ("family", "families"),
                                       ("manufacturer", "manufacturers")])
def test_aircraft_levels_and_official_val(aircraft_root, level, key):
    root, exp = aircraft_root
    splits = build_splits(data_cfg("fgvc_aircraft", root, aircraft_level=level, val_fraction=0.5))
    assert splits.class_names == exp[key]
    # official val is used as is; val_fraction is ignored
    assert (len(splits.train), len(splits.val), len(splits.test)) == (exp["train"], exp["val"], exp["test"])
    assert all(p.startswith(str(root)) for p, _ in splits.train.samples)


@pytest.mark.parametrize("layout", ["named", "torchvision_parent", "other_name"])
def test_aircraft_folder_layouts(tmp_path, builders, layout):
    # data.root may be the dataset folder under its official name or any other name, or the folder
    # torchvision downloads into (<root>/fgvc-aircraft-2013b/data)
    folder = {"named": "fgvc-aircraft-2013b", "torchvision_parent": "fgvc-aircraft-2013b", "other_name": "mine"}[layout]
    exp = builders["aircraft"](tmp_path / folder)
    root = tmp_path if layout == "torchvision_parent" else tmp_path / folder
    raw = load_raw(data_cfg("fgvc_aircraft", root))
    assert raw.class_names == exp["classes"]
    assert (len(raw.train), len(raw.val), len(raw.test)) == (exp["train"], exp["val"], exp["test"])
    assert all(os.path.isfile(p) and p.startswith(str(tmp_path / folder)) for p, _ in raw.train + raw.val + raw.test)


def test_pets_any_folder_name(pets_root):
    root, exp = pets_root
    raw = load_raw(data_cfg("oxford_pets", root))
    assert raw.class_names == exp["classes"]
    assert (len(raw.train), len(raw.test), raw.val) == (exp["train"], exp["test"], None)
    # paths point into the real folder, not into a temporary torchvision adapter
    assert all(os.path.isfile(p) and p.startswith(str(root)) for p, _ in raw.train + raw.test)
    labels = _labels_by_file(raw.train)
    assert labels["Abyssinian_1.jpg"] == 0 and labels["american_bulldog_2.jpg"] == 1 and labels["Bengal_4.jpg"] == 2


def test_dogs(dogs_root):
    root, exp = dogs_root
    raw = load_raw(data_cfg("stanford_dogs", root))
    assert raw.class_names == exp["classes"]
    assert (len(raw.train), len(raw.test)) == (exp["train"], exp["test"])
    for p, y in raw.train + raw.test:
        assert os.path.isfile(p)
        assert clean_class_name(os.path.basename(os.path.dirname(p))) == raw.class_names[y]


def test_cars(cars_root):
    root, exp = cars_root
    raw = load_raw(data_cfg("stanford_cars", root))
    assert raw.class_names == exp["classes"]
    assert (len(raw.train), len(raw.test)) == (exp["train"], exp["test"])
    assert Counter(y for _, y in raw.train) == {0: 3, 1: 3, 2: 3}
    assert all(os.path.isfile(p) and "/cars_train/" in p for p, _ in raw.train)
    assert all(os.path.isfile(p) and "/cars_test/" in p for p, _ in raw.test)


@pytest.mark.parametrize("use_val", [False, True])
def test_flowers(flowers_root, use_val):
    from torchvision.datasets import Flowers102

    root, exp = flowers_root
    splits = build_splits(data_cfg("flowers102", root, flowers_use_val=use_val, val_fraction=0.5))
    assert len(splits.class_names) == 102
    assert splits.class_names == list(Flowers102.classes)
    assert splits.class_names[0] == "pink primrose" and splits.class_names[101] == "blackberry lily"
    assert len(splits.test) == exp["test"]
    if use_val:
        assert (len(splits.train), len(splits.val)) == (exp["train"], exp["val"])
    else:  # held out of the official train split: 1 of 2 per class
        assert (len(splits.train), len(splits.val)) == (exp["train"] // 2, exp["train"] // 2)
    assert Counter(splits.test.targets) == {c: 1 for c in range(102)}


def test_dtd_partitions(dtd_root):
    root, exp = dtd_root
    s1 = build_splits(data_cfg("dtd", root, dtd_partition=1))
    s2 = build_splits(data_cfg("dtd", root, dtd_partition=2))
    for s in (s1, s2):
        assert s.class_names == exp["classes"]
        assert (len(s.train), len(s.val), len(s.test)) == (exp["train"], exp["val"], exp["test"])
        for p, y in s.train.samples + s.val.samples + s.test.samples:
            assert os.path.basename(os.path.dirname(p)) == exp["classes"][y]
    assert {p for p, _ in s1.train.samples} != {p for p, _ in s2.train.samples}


def test_nabirds_leaf_relabel_no_off_by_one(nabirds_root):
    root, exp = nabirds_root
    raw = load_raw(data_cfg("nabirds", root))
    # only the 3 leaf classes with images, in class-id order; the unused leaf and inner nodes are dropped
    assert raw.class_names == exp["classes"]
    assert (len(raw.train), len(raw.test)) == (exp["train"], exp["test"])
    cid_to_label = {295: 0, 314: 1, 315: 2}
    truth = {os.path.basename(rel): (cid_to_label[c], t) for _, rel, c, t in exp["rows"]}
    for split, flag in ((raw.train, 1), (raw.test, 0)):
        for p, y in split:
            assert truth[os.path.basename(p)] == (y, flag)


def test_imagefolder_matches_torchvision(imagefolder_root):
    from torchvision.datasets import ImageFolder

    root, exp = imagefolder_root
    raw = load_raw(data_cfg("imagefolder", root))
    assert raw.class_names == exp["classes"]
    assert (len(raw.train), len(raw.val), len(raw.test)) == (exp["train"], exp["val"], exp["test"])
    for split in ("train", "val", "test"):
        tv = ImageFolder(str(root / split))
        assert getattr(raw, split) == [(p, y) for p, y in tv.samples]


def test_imagefolder_without_val_holds_out(tmp_path, builders):
    root = tmp_path / "if"
    builders["imagefolder"](root, {"train": 10, "test": 2})
    s = build_splits(data_cfg("imagefolder", root, val_fraction=0.2))
    assert (len(s.train), len(s.val), len(s.test)) == (24, 6, 6)


def test_class_names_override(cub_root):
    root, _ = cub_root
    names = ["albatross a", "albatross b", "albatross c"]
    s = build_splits(data_cfg("cub_200_2011", root, class_names=names))
    assert s.class_names == names and s.train.class_names == names
    assert s.prompts()[0] == "a photo of a albatross a."


def test_base_novel_classes(cub_root):
    root, _ = cub_root
    s = build_splits(data_cfg("cub_200_2011", root))
    assert (s.base_classes, s.novel_classes) == ([0, 1], [2])
