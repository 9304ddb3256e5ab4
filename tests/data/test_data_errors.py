"""The user-facing errors of the dataset layer: each names the bad input and the fix."""
from __future__ import annotations

import os
import shutil
import warnings

import pytest
from omegaconf import OmegaConf

from pand.config.schema import DataCfg
from pand.data import build_splits, get_dataset
from pand.errors import DataError


def cfg(name, root, **kw):
    return OmegaConf.structured(DataCfg(name=name, root=str(root) if root is not None else None, **kw))


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError, match="unknown dataset 'cub'.*cub_200_2011.*stanford_dogs"):
        build_splits(cfg("cub", "/nowhere"))
    with pytest.raises(DataError, match="Valid choices"):
        get_dataset("imagenet")


def test_root_not_set_names_expected_files():
    with pytest.raises(DataError, match="data.root is not set.*images.txt.*train_test_split.txt"):
        build_splits(cfg("cub_200_2011", None))


def test_root_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_splits(cfg("stanford_dogs", tmp_path / "nope"))


@pytest.mark.parametrize("name,expect", [
    ("cub_200_2011", "images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, images"),
    ("fgvc_aircraft", "data/images, data/variants.txt"),
    ("oxford_pets", "images, annotations/trainval.txt"),
    ("stanford_dogs", "Images, train_list.mat, test_list.mat"),
    ("stanford_cars", "devkit/cars_meta.mat"),
    ("flowers102", "jpg, imagelabels.mat, setid.mat"),
    ("dtd", "images, labels/train1.txt"),
    ("nabirds", "images.txt"),
    ("imagefolder", "train, test"),
])
def test_empty_root_names_missing_files(tmp_path, name, expect):
    with pytest.raises(DataError, match="is missing " + expect.replace(".", r"\.")):
        build_splits(cfg(name, tmp_path))


def test_split_file_refers_to_missing_images(cub_root):
    root, exp = cub_root
    gone = [root / "images" / rel for _, rel, _, t in exp["rows"] if t == 1][:2]
    for p in gone:
        os.remove(p)
    with pytest.raises(DataError, match=r"2 of 18 train images listed in train_test_split.txt.*are missing") as e:
        build_splits(cfg("cub_200_2011", root))
    assert str(gone[0]) in str(e.value)


def test_empty_class(cub_root):
    root, _ = cub_root
    with open(root / "classes.txt", "a") as f:
        f.write("4 004.Groove_billed_Ani\n")
    with pytest.raises(DataError, match=r"1 class\(es\) have no train images: 3 \(Groove billed Ani\)"):
        build_splits(cfg("cub_200_2011", root))


def test_empty_imagefolder_class(imagefolder_root):
    root, _ = imagefolder_root
    (root / "train" / "099.Empty_Class").mkdir()
    with pytest.raises(DataError, match="no train images.*Empty Class"):
        build_splits(cfg("imagefolder", root))


def test_test_class_unknown_to_train(imagefolder_root):
    root, _ = imagefolder_root
    shutil.copytree(root / "test" / "002.Laysan_Albatross", root / "test" / "050.Extra")
    with pytest.raises(DataError, match=r"class folder\(s\) \['050.Extra'\] that train/ does not have"):
        build_splits(cfg("imagefolder", root))


def test_duplicate_class_names(imagefolder_root):
    root, _ = imagefolder_root
    shutil.copytree(root / "train" / "002.Laysan_Albatross", root / "train" / "Laysan_Albatross")
    with pytest.raises(DataError, match="duplicate class name 'Laysan Albatross'"):
        build_splits(cfg("imagefolder", root))


def test_class_names_override_checked(cub_root):
    root, _ = cub_root
    with pytest.raises(DataError, match="data.class_names has 2 names but the dataset has 3"):
        build_splits(cfg("cub_200_2011", root, class_names=["a", "b"]))
    with pytest.raises(DataError, match="duplicate class name 'a'.*data.class_names"):
        build_splits(cfg("cub_200_2011", root, class_names=["a", "b", "a"]))


def test_cub_inconsistent_tables(cub_root):
    root, _ = cub_root
    lines = (root / "image_class_labels.txt").read_text().splitlines()
    (root / "image_class_labels.txt").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError, match="image_class_labels.txt has no row for 1 image id"):
        build_splits(cfg("cub_200_2011", root))


def test_aircraft_unknown_variant(aircraft_root):
    root, _ = aircraft_root
    with open(root / "data" / "images_variant_test.txt", "a") as f:
        f.write("9999999 Concorde\n")
    with pytest.raises(DataError, match="names class 'Concorde'"):
        build_splits(cfg("fgvc_aircraft", root))


def test_dtd_bad_partition(dtd_root):
    root, _ = dtd_root
    with pytest.raises(DataError, match="is missing labels/train3.txt"):
        build_splits(cfg("dtd", root, dtd_partition=3))
    with pytest.raises(DataError, match="partitions are 1..10"):
        build_splits(cfg("dtd", root, dtd_partition=11))


def test_bad_template(cub_root):
    root, _ = cub_root
    with pytest.raises(DataError, match="has no '{}'"):
        build_splits(cfg("cub_200_2011", root, template="a photo of a bird."))


def test_corrupt_image_named_or_skipped(imagefolder_root):
    root, _ = imagefolder_root
    bad = root / "train" / "001.Black_footed_Albatross" / "img_0.jpg"
    bad.write_bytes(b"not a jpeg at all")
    s = build_splits(cfg("imagefolder", root))
    i = [p for p, _ in s.train.samples].index(str(bad))
    with pytest.raises(DataError, match="cannot read image .*img_0.jpg.*data.skip_corrupt=true"):
        s.train[i]
    n = len(s.train)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = build_splits(cfg("imagefolder", root, skip_corrupt=True))
    # dropped (never replaced by a neighbour), counted and reported
    assert str(bad) not in [p for p, _ in s.train.samples] and len(s.train) == n - 1
    assert s.train.skipped == 1 and s.skipped == {"train": [str(bad)]}
    assert any("dropped 1 of" in str(x.message) and "img_0.jpg" in str(x.message) for x in w)
    assert all(s.train[k][0].size == (6, 5) for k in range(len(s.train)))
