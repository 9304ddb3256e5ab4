"""Oxford Flowers-102 in torchvision's ``Flowers102`` layout.

Expected tree (``data.root`` = torchvision's ``flowers-102/`` folder)::

    jpg/image_00001.jpg ... image_08189.jpg
    imagelabels.mat   ("labels": class 1..102 of image k at position k-1)
    setid.mat         ("trnid", "valid", "tstid": 1-based image ids)

Class names are the standard list (``torchvision.datasets.Flowers102.classes``, the one CoOp uses).
The .mat files are read here with scipy rather than through ``Flowers102(...)``, because that class
refuses any ``.mat`` whose MD5 differs from the original download (re-saved files, test fixtures).
Train = the official train split; ``data.flowers_use_val=true`` makes the official val split the
validation set, otherwise val is held out of train and the official val images are not used.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

import numpy as np

from pand.errors import DataError

from .layout import RawSplits, descend, require_files

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

LAYOUT = "flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat}"
SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}


def flowers_class_names() -> List[str]:
    """The standard 102 Flowers class names in label order."""
    from torchvision.datasets import Flowers102

    return list(Flowers102.classes)


def _loadmat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        return np.atleast_1d(loadmat(str(path), squeeze_me=True)[key]).astype(np.int64)
    except KeyError:
        raise DataError(f"flowers102: {path} has no '{key}' array; restore the official file") from None
    except (ValueError, TypeError, OSError) as e:
        raise DataError(f"flowers102: cannot read {path} ({type(e).__name__}: {e})") from None


def load_flowers(root: Path, cfg: DataCfg) -> RawSplits:
    """Read Flowers-102: official train / (val) / test splits from ``setid.mat``."""
    root = descend(root, ["flowers-102"], "setid.mat")
    require_files(root, "flowers102", ["jpg", "imagelabels.mat", "setid.mat"], LAYOUT)
    names = flowers_class_names()
    labels = _loadmat(root / "imagelabels.mat", "labels")
    if labels.size and (labels.min() < 1 or labels.max() > len(names)):
        raise DataError(f"flowers102: imagelabels.mat has labels outside 1..{len(names)}")
    out: Dict[str, list] = {}
    for split, key in SPLIT_KEYS.items():
        ids = _loadmat(root / "setid.mat", key)
        bad = ids[(ids < 1) | (ids > labels.size)]
        if bad.size:
            raise DataError(f"flowers102: setid.mat '{key}' has image id {int(bad[0])}, but imagelabels.mat "
                            f"has {labels.size} labels")
        out[split] = [(str(root / "jpg" / f"image_{int(i):05d}.jpg"), int(labels[i - 1]) - 1) for i in ids]
    use_val = bool(cfg.flowers_use_val)
    return RawSplits(
        train=out["train"], val=out["val"] if use_val else None, test=out["test"], class_names=names, root=root,
        sources={"train": "setid.mat trnid", "val": "setid.mat valid", "test": "setid.mat tstid"},
    )
