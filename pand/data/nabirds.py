"""NABirds in its official layout (torchvision has no loader for it).

Expected tree (``data.root`` = ``nabirds/``)::

    images.txt              "<image_id> <relative path under images/>"
    image_class_labels.txt  "<image_id> <class_id>"
    train_test_split.txt    "<image_id> <is_training_image 0|1>"
    classes.txt             "<class_id> <class name>"   (every node of the hierarchy, 0 = "Birds")
    hierarchy.txt           "<child_id> <parent_id>"   (optional; used to check that labelled classes are leaves)
    images/<class_dir>/<file>.jpg

``classes.txt`` lists all 1011 hierarchy nodes but only the 555 leaf classes have images. pand keeps the
classes that have images and relabels them ``0..C-1`` in ascending class-id order, so ``class_names[label]``
is the image's own class. (The reference uses ``label = class_id - 1`` against 0-based names: an
off-by-one between labels and text anchors, plus 456 dead classes.)
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List

from pand.errors import DataError

from .cub import join_by_id, read_class_table
from .layout import RawSplits, clean_class_name, read_table, require_files

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images")
LAYOUT = "nabirds/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, hierarchy.txt, images/}"


def load_nabirds(root: Path, cfg: DataCfg) -> RawSplits:
    """Read NABirds: official train/test split over the leaf classes that have images."""
    require_files(root, "nabirds", FILES, LAYOUT)
    classes = read_class_table(root / "classes.txt", "nabirds")
    table = join_by_id(root, "nabirds", {
        "path": "images.txt", "class": "image_class_labels.txt", "is_train": "train_test_split.txt"})
    used = set()
    for image_id, row in table.items():
        cid = int(row["class"])
        if cid not in classes:
            raise DataError(f"nabirds: image {image_id} has class {cid}, which classes.txt does not list")
        used.add(cid)
    if (root / "hierarchy.txt").is_file():
        parents = {int(p) for _, p in read_table(root / "hierarchy.txt", 2, "nabirds")}
        inner = sorted(used & parents)
        if inner:
            raise DataError(
                f"nabirds: classes {inner[:5]} have images but are inner nodes of hierarchy.txt; the labels would be "
                f"ambiguous. Check image_class_labels.txt against classes.txt/hierarchy.txt."
            )
    ids = sorted(used)
    label_of = {cid: i for i, cid in enumerate(ids)}
    train: List = []
    test: List = []
    for image_id, row in table.items():
        flag = row["is_train"].strip()
        if flag not in ("0", "1"):
            raise DataError(f"nabirds: train_test_split.txt: image {image_id} has flag {flag!r}; expected 0 or 1")
        sample = (str(root / "images" / row["path"]), label_of[int(row["class"])])
        (train if flag == "1" else test).append(sample)
    return RawSplits(
        train=train, test=test, class_names=[clean_class_name(classes[c]) for c in ids], root=root,
        sources={"train": "train_test_split.txt (is_train=1)", "test": "train_test_split.txt (is_train=0)"},
    )
