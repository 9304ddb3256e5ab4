"""FGVC-Aircraft 2013b through ``torchvision.datasets.FGVCAircraft`` (metadata only, ``download=False``).

Expected tree (``data.root`` = ``fgvc-aircraft-2013b/``)::

    data/images/<image_id>.jpg
    data/variants.txt | families.txt | manufacturers.txt           (one class name per line = label order)
    data/images_<level>_{train,val,test}.txt                       ("<image_id> <class name>")

``data.aircraft_level`` picks the level (variant = 100 classes by default, family = 70, manufacturer = 30).
The official ``val`` split is the validation set (``data.val_fraction`` is ignored).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pand.errors import DataError

from .layout import RawSplits, clean_class_name, descend, require_files, torchvision_root, tv_attr

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

LAYOUT = ("fgvc-aircraft-2013b/data/{images/, variants.txt, families.txt, manufacturers.txt, "
          "images_<level>_{train,val,test}.txt}")
CLASS_FILES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}


def load_aircraft(root: Path, cfg: DataCfg) -> RawSplits:
    """Read FGVC-Aircraft at ``data.aircraft_level`` with its official train / val / test splits."""
    root = descend(root, ["fgvc-aircraft-2013b"], "data")
    level = str(cfg.aircraft_level)
    if level not in CLASS_FILES:
        raise DataError(f"fgvc_aircraft: data.aircraft_level={level!r}. Valid choices: {', '.join(CLASS_FILES)}")
    files = ["data/images", f"data/{CLASS_FILES[level]}"]
    files += [f"data/images_{level}_{s}.txt" for s in ("train", "val", "test")]
    require_files(root, "fgvc_aircraft", files, LAYOUT)
    from torchvision.datasets import FGVCAircraft

    out = {}
    with torchvision_root(root, "fgvc-aircraft-2013b") as (tv_root, to_real):
        for split in ("train", "val", "test"):
            try:
                ds = FGVCAircraft(tv_root, split=split, annotation_level=level, download=False)
            except KeyError as e:
                raise DataError(
                    f"fgvc_aircraft: data/images_{level}_{split}.txt names class {e} that data/{CLASS_FILES[level]} "
                    f"does not list"
                ) from None
            files_ = tv_attr(ds, "_image_files")
            labels = tv_attr(ds, "_labels")
            out[split] = [(to_real(p), int(y)) for p, y in zip(files_, labels)]
            classes = list(ds.classes)
    return RawSplits(
        train=out["train"], val=out["val"], test=out["test"], class_names=[clean_class_name(c) for c in classes],
        root=root, sources={s: f"data/images_{level}_{s}.txt" for s in ("train", "val", "test")},
    )
