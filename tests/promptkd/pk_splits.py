"""Tiny labelled splits for the PromptKD tests (a uniquely named module, importable from any test file)."""
from pathlib import Path
from typing import List, Optional

from PIL import Image

from pand.data.base import DataSplits, FGVCDataset


def tiny_splits(root: Path, num_classes: int, base: Optional[List[int]] = None, novel: Optional[List[int]] = None,
                with_test: bool = True) -> DataSplits:
    """DataSplits of 8-px images under ``root``: 3 train / 1 val / 2 test per class (no test split if not
    ``with_test``); ``base``/``novel`` set the data layer's own base-to-novel split."""
    names = [f"class {c}" for c in range(num_classes)]

    def split(name, per_class):
        samples = []
        for c in range(num_classes):
            for k in range(per_class):
                p = Path(root) / name / f"{c}_{k}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (c * 40, k * 60, 0)).save(p)
                samples.append((str(p), c))
        return FGVCDataset(samples, names, name=name)

    return DataSplits(train=split("train", 3), val=split("val", 1), test=split("test", 2) if with_test else None,
                      class_names=names, base_classes=base, novel_classes=novel)
