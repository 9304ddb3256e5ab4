"""Stanford Cars through ``torchvision.datasets.StanfordCars`` (metadata only, ``download=False``).

Expected tree (``data.root`` = torchvision's ``stanford_cars/`` folder)::

    devkit/cars_meta.mat                ("class_names": 196 names, index = class - 1)
    devkit/cars_train_annos.mat         ("annotations": bbox_x1..bbox_y2, class 1..196, fname)
    cars_test_annos_withlabels.mat      (same fields for the test images)
    cars_train/<fname>.jpg
    cars_test/<fname>.jpg

No official val split: val is held out of train.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pand.errors import DataError

from .layout import RawSplits, clean_class_name, descend, require_files, torchvision_root, tv_attr

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

LAYOUT = ("stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, "
          "cars_train/, cars_test/}")
FILES = ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat", "cars_train",
         "cars_test")


def load_cars(root: Path, cfg: DataCfg) -> RawSplits:
    """Read Stanford Cars: official train / test, 196 classes named from ``devkit/cars_meta.mat``."""
    root = descend(root, ["stanford_cars"], "devkit")
    require_files(root, "stanford_cars", FILES, LAYOUT)
    from torchvision.datasets import StanfordCars

    out, classes = {}, []
    with torchvision_root(root, "stanford_cars") as (tv_root, to_real):
        for split in ("train", "test"):
            try:
                ds = StanfordCars(tv_root, split=split, download=False)
            except (KeyError, ValueError, TypeError, IndexError) as e:
                mat = "devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat"
                raise DataError(
                    f"stanford_cars: cannot read {mat} or devkit/cars_meta.mat ({type(e).__name__}: {e}); expected "
                    f"an 'annotations' struct array with 'fname' and 'class' and a 'class_names' cell array"
                ) from None
            out[split] = [(to_real(p), int(y)) for p, y in tv_attr(ds, "_samples")]
            classes = [str(c) for c in ds.classes]
    for split, samples in out.items():
        bad = [p for p, y in samples if not 0 <= y < len(classes)]
        if bad:
            raise DataError(f"stanford_cars: {split} image {bad[0]} has a class outside 1..{len(classes)}")
    return RawSplits(
        train=out["train"], test=out["test"], class_names=[clean_class_name(c) for c in classes], root=root,
        sources={"train": "devkit/cars_train_annos.mat", "test": "cars_test_annos_withlabels.mat"},
    )
