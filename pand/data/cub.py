"""CUB-200-2011 in its official layout (torchvision has no loader for it).

Expected tree (``data.root`` = ``CUB_200_2011/``)::

    images.txt              "<image_id> <relative path under images/>"
    image_class_labels.txt  "<image_id> <class_id>"
    train_test_split.txt    "<image_id> <is_training_image 0|1>"
    classes.txt             "<class_id> <NNN.Class_Name>"
    images/<NNN.Class_Name>/<file>.jpg

The three image tables are joined **by image id** (the reference joins them by line position, which breaks
as soon as one file is re-sorted). Labels are the class's position in ``classes.txt`` sorted by class id,
so ``class_names[label]`` is always the class the image belongs to.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

from pand.errors import DataError

from .layout import RawSplits, clean_class_name, read_table, require_files

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images")
LAYOUT = "CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, images/}"


def read_class_table(path: Path, dataset: str) -> Dict[int, str]:
    """``classes.txt``-style table ``"<id> <name>"`` as ``{id: raw name}``; duplicate ids are an error."""
    out: Dict[int, str] = {}
    for cid, name in read_table(path, 2, dataset):
        try:
            key = int(cid)
        except ValueError:
            raise DataError(f"{dataset}: {path}: class id {cid!r} is not an integer") from None
        if key in out:
            raise DataError(f"{dataset}: {path}: class id {key} appears twice")
        out[key] = name
    return out


def join_by_id(root: Path, dataset: str, files: Dict[str, str]) -> Dict[str, Dict[str, str]]:
    """Join two-column ``"<image_id> <value>"`` tables by image id.

    Args:
        files: column name -> file name under ``root`` (the first one defines the image set).

    Returns:
        ``{image_id: {column: value}}``; raises :class:`DataError` naming the file when an id is missing or
        repeated in one of the tables.
    """
    table: Dict[str, Dict[str, str]] = {}
    for i, (col, fname) in enumerate(files.items()):
        path = root / fname
        seen = set()
        for image_id, value in read_table(path, 2, dataset):
            if image_id in seen:
                raise DataError(f"{dataset}: {path}: image id {image_id} appears twice")
            seen.add(image_id)
            if i == 0:
                table[image_id] = {col: value}
            elif image_id in table:
                table[image_id][col] = value
        missing = [k for k in table if k not in seen]
        if missing:
            raise DataError(
                f"{dataset}: {path} has no row for {len(missing)} image id(s) listed in {next(iter(files.values()))} "
                f"(first: {missing[0]}). The metadata files come from different dataset versions; re-extract them."
            )
    return table


def load_cub(root: Path, cfg: DataCfg) -> RawSplits:
    """Read CUB-200-2011: official train/test split, 200 classes named from ``classes.txt``."""
    require_files(root, "cub_200_2011", FILES, LAYOUT)
    classes = read_class_table(root / "classes.txt", "cub_200_2011")
    ids = sorted(classes)
    label_of = {cid: i for i, cid in enumerate(ids)}
    table = join_by_id(root, "cub_200_2011", {
        "path": "images.txt", "class": "image_class_labels.txt", "is_train": "train_test_split.txt"})
    train: List = []
    test: List = []
    for image_id, row in table.items():
        cid = int(row["class"])
        if cid not in label_of:
            raise DataError(f"cub_200_2011: image {image_id} has class {cid}, which classes.txt does not list")
        sample = (str(root / "images" / row["path"]), label_of[cid])
        flag = row["is_train"].strip()
        if flag not in ("0", "1"):
            raise DataError(f"cub_200_2011: train_test_split.txt: image {image_id} has flag {flag!r}; expected 0 or 1")
        (train if flag == "1" else test).append(sample)
    return RawSplits(
        train=train, test=test, class_names=[clean_class_name(classes[c]) for c in ids], root=root,
        sources={"train": "train_test_split.txt (is_train=1)", "test": "train_test_split.txt (is_train=0)"},
    )
