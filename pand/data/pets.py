"""Oxford-IIIT Pet through ``torchvision.datasets.OxfordIIITPet`` (metadata only, ``download=False``).

Expected tree (``data.root`` = the folder holding ``images/`` and ``annotations/``)::

    images/<Breed_name>_<n>.jpg
    annotations/trainval.txt   "<image_name> <class_id 1..37> <species> <breed_id>"
    annotations/test.txt

Labels are ``class_id - 1``; names come from the image-name prefixes as torchvision builds them
("american_bulldog" -> "American Bulldog"). No official val split: val is held out of trainval.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pand.errors import DataError

from .layout import RawSplits, descend, require_files, torchvision_root, tv_attr

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

LAYOUT = "oxford-iiit-pet/{images/, annotations/trainval.txt, annotations/test.txt}"


def load_pets(root: Path, cfg: DataCfg) -> RawSplits:
    """Read Oxford-IIIT Pet: official trainval / test, 37 breeds."""
    root = descend(root, ["oxford-iiit-pet"], "annotations")
    require_files(root, "oxford_pets", ["images", "annotations/trainval.txt", "annotations/test.txt"], LAYOUT)
    from torchvision.datasets import OxfordIIITPet

    out, class_names = {}, []
    with torchvision_root(root, "oxford-iiit-pet") as (tv_root, to_real):
        for split in ("trainval", "test"):
            try:
                ds = OxfordIIITPet(tv_root, split=split, target_types="category", download=False)
            except ValueError as e:
                raise DataError(
                    f"oxford_pets: annotations/{split}.txt is malformed ({e}); expected 4 columns") from None
            labels = [int(y) for y in tv_attr(ds, "_labels")]
            out[split] = [(to_real(p), y) for p, y in zip(tv_attr(ds, "_images"), labels)]
            if split == "trainval":
                present = sorted(set(labels))
                if present != list(range(len(present))) or len(ds.classes) != len(present):
                    raise DataError(
                        f"oxford_pets: annotations/trainval.txt has class ids {[y + 1 for y in present][:40]}; every "
                        f"class 1..C needs trainval images and one breed name. Restore the official file."
                    )
                class_names = list(ds.classes)
    return RawSplits(
        train=out["trainval"], test=out["test"], class_names=class_names, root=root,
        sources={"train": "annotations/trainval.txt", "test": "annotations/test.txt"},
    )
