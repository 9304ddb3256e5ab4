"""Core data structures shared by every dataset loader.

A loader turns an official on-disk layout into a list of ``(absolute image path, label)`` samples
and a list of class names (label ``i`` <-> ``class_names[i]``). :class:`FGVCDataset` wraps such a list
as a torch ``Dataset`` returning ``(transform(PIL RGB image), label)``. :class:`DataSplits` holds the
train / val / test datasets of one run (val always held out of train or official, never test).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from pand.errors import DataError

__all__ = ["Sample", "FGVCDataset", "DataSplits"]

Sample = Tuple[str, int]


class FGVCDataset:
    """A list of labelled image files as a map-style dataset.

    Args:
        samples: ``(path, label)`` pairs, labels in ``[0, len(class_names))``.
        class_names: prompt-ready class names, index = label.
        transform: applied to the PIL RGB image (None: the PIL image is returned).
        skip_corrupt: on an unreadable image, warn and return the next readable one instead of raising.
        name: dataset name + split, used in messages.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        class_names: Sequence[str],
        transform: Optional[Callable] = None,
        skip_corrupt: bool = False,
        name: str = "",
    ):
        self.samples: List[Sample] = [(str(p), int(y)) for p, y in samples]
        self.class_names: List[str] = list(class_names)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.name = name
        self.skipped = 0

    @property
    def targets(self) -> List[int]:
        return [y for _, y in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int):
        """The RGB PIL image of sample ``index``; raises :class:`DataError` naming the file if unreadable."""
        from PIL import Image

        path = self.samples[index][0]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
            raise DataError(
                f"cannot read image {path} ({type(e).__name__}: {e}). Fix or remove the file, or set "
                f"data.skip_corrupt=true to skip unreadable images with a warning."
            ) from e

    def __getitem__(self, index: int):
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            try:
                img = self.load_image(i)
            except DataError:
                if not self.skip_corrupt:
                    raise
                self.skipped += 1
                warnings.warn(f"{self.name}: skipped unreadable image {self.samples[i][0]} ({self.skipped} so far)")
                continue
            label = self.samples[i][1]
            return (self.transform(img) if self.transform is not None else img), label
        raise DataError(f"{self.name}: no readable image at all")

    def with_transform(self, transform: Optional[Callable]) -> "FGVCDataset":
        """A shallow copy that applies ``transform`` instead."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def subset(self, indices: Sequence[int], name: Optional[str] = None) -> "FGVCDataset":
        """A copy holding only ``samples[i]`` for ``i`` in ``indices`` (labels unchanged)."""
        other = copy.copy(self)
        other.samples = [self.samples[i] for i in indices]
        other.name = name or self.name
        return other


@dataclass
class DataSplits:
    """The datasets of one run. ``val`` is held out of train (or an official val split), never test."""

    train: FGVCDataset
    val: Optional[FGVCDataset]
    test: FGVCDataset
    class_names: List[str]
    root: Optional[Path] = None
    template: str = "a photo of a {}."
    # base-to-novel protocol: class ids sorted, first ceil(C/2) = base, rest = novel
    base_classes: Optional[List[int]] = None
    novel_classes: Optional[List[int]] = None
    captions: Optional[dict] = field(default=None)  # synthetic: image path -> caption

    def prompts(self) -> List[str]:
        """The hand-crafted prompt of every class, in label order."""
        return [self.template.format(n) for n in self.class_names]
