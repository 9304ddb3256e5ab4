"""Stanford Dogs in its official layout (torchvision has no loader for it).

Expected tree (``data.root`` = the folder holding ``Images/`` and the lists)::

    Images/<wnid>-<Breed_name>/<wnid>_<n>.jpg
    train_list.mat   ("file_list": paths under Images/, "labels": 1..120)
    test_list.mat

Labels are ``labels - 1``; a class's name is its folder name without the WordNet id
("n02085782-Japanese_spaniel" -> "Japanese spaniel"). No official val split: val is held out of train.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Tuple

import numpy as np

from pand.errors import DataError

from .layout import RawSplits, clean_class_name, require_files

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

LAYOUT = "StanfordDogs/{Images/<wnid>-<breed>/*.jpg, train_list.mat, test_list.mat}"


def _read_list(path: Path) -> List[Tuple[str, int]]:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), squeeze_me=True)
        files = np.atleast_1d(mat["file_list"]).tolist()
        labels = np.atleast_1d(mat["labels"]).astype(np.int64).tolist()
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise DataError(
            f"stanford_dogs: cannot read {path} ({type(e).__name__}: {e}); expected the official list with "
            f"'file_list' and 'labels'"
        ) from None
    if len(files) != len(labels):
        raise DataError(f"stanford_dogs: {path}: {len(files)} files but {len(labels)} labels")
    return [(str(f), int(y)) for f, y in zip(files, labels)]


def load_dogs(root: Path, cfg: DataCfg) -> RawSplits:
    """Read Stanford Dogs: official train / test lists, 120 breeds."""
    require_files(root, "stanford_dogs", ["Images", "train_list.mat", "test_list.mat"], LAYOUT)
    lists = {split: _read_list(root / f"{split}_list.mat") for split in ("train", "test")}
    folder_of: Dict[int, str] = {}
    for split, rows in lists.items():
        for rel, y in rows:
            folder = rel.replace("\\", "/").split("/")[0]
            if folder_of.setdefault(y, folder) != folder:
                raise DataError(
                    f"stanford_dogs: {split}_list.mat gives label {y} to images in both {folder_of[y]}/ and {folder}/"
                )
    num = max(folder_of) if folder_of else 0
    missing = [y for y in range(1, num + 1) if y not in folder_of]
    if missing or min(folder_of, default=1) < 1:
        raise DataError(f"stanford_dogs: labels must be 1..C with every class present; missing or bad: {missing[:10]}")
    out = {split: [(str(root / "Images" / rel), y - 1) for rel, y in rows] for split, rows in lists.items()}
    return RawSplits(
        train=out["train"], test=out["test"], root=root,
        class_names=[clean_class_name(folder_of[y]) for y in range(1, num + 1)],
        sources={"train": "train_list.mat", "test": "test_list.mat"},
    )
