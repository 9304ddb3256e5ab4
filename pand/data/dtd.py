"""Describable Textures (DTD) through ``torchvision.datasets.DTD`` (metadata only, ``download=False``).

Expected tree (``data.root`` = the ``dtd/`` folder of ``dtd-r1.0.1.tar.gz``)::

    images/<class>/<class>_<n>.jpg
    labels/train<k>.txt, val<k>.txt, test<k>.txt   ("<class>/<file>.jpg", k = 1..10)

``data.dtd_partition`` picks k. The official val split is the validation set. Labels are the class's
index in the sorted class list (the reference uses an unsorted ``os.listdir``, so its labels can disagree
with its class-name list).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pand.errors import DataError

from .layout import RawSplits, clean_class_name, descend, require_files, torchvision_root, tv_attr

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

LAYOUT = "dtd/{images/<class>/*.jpg, labels/train<k>.txt, labels/val<k>.txt, labels/test<k>.txt}"


def load_dtd(root: Path, cfg: DataCfg) -> RawSplits:
    """Read DTD partition ``data.dtd_partition``: official train / val / test."""
    root = descend(root, ["dtd/dtd", "dtd"], "labels")
    k = cfg.dtd_partition
    if not isinstance(k, int) or not 1 <= k <= 10:
        raise DataError(f"dtd: data.dtd_partition={k!r}; the official partitions are 1..10")
    splits = ("train", "val", "test")
    require_files(root, "dtd", ["images"] + [f"labels/{s}{k}.txt" for s in splits], LAYOUT)
    from torchvision.datasets import DTD

    out, classes = {}, {}
    with torchvision_root(root, "dtd/dtd") as (tv_root, to_real):
        for split in splits:
            try:
                ds = DTD(tv_root, split=split, partition=k, download=False)
            except ValueError as e:
                raise DataError(
                    f"dtd: labels/{split}{k}.txt is malformed ({e}); expected '<class>/<file>' lines") from None
            out[split] = [(to_real(p), int(y)) for p, y in zip(tv_attr(ds, "_image_files"), tv_attr(ds, "_labels"))]
            classes[split] = list(ds.classes)
    for split in ("val", "test"):
        if classes[split] != classes["train"]:
            diff = sorted(set(classes["train"]) ^ set(classes[split]))
            raise DataError(f"dtd: labels/train{k}.txt and labels/{split}{k}.txt list different classes: {diff[:10]}")
    return RawSplits(
        train=out["train"], val=out["val"], test=out["test"], root=root,
        class_names=[clean_class_name(c) for c in classes["train"]],
        sources={s: f"labels/{s}{k}.txt" for s in splits},
    )
