"""Core data structures shared by every dataset loader.

A loader turns an official on-disk layout into a list of ``(absolute image path, label)`` samples
and a list of class names (label ``i`` <-> ``class_names[i]``). :class:`FGVCDataset` wraps such a list
as a torch ``Dataset`` returning ``(transform(PIL RGB image), label)``. :class:`DataSplits` holds the
train / val / test datasets of one run (val always held out of train or official, never test).

Images decode to 8-bit RGB with :func:`pand_runtime.image.to_rgb` (16-bit greyscale PNGs are scaled, not clipped
to white). With ``data.skip_corrupt=true`` unreadable images are dropped from the sample lists when the splits
are built (:func:`unreadable_images`, counted in ``DataSplits.skipped``), never replaced by another image.
"""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from pand.errors import DataError
from pand_runtime.image import to_rgb

__all__ = ["Sample", "UNLABELED", "FGVCDataset", "DataSplits", "read_rgb", "unreadable_images"]

Sample = Tuple[str, int]
UNLABELED = -1  # the label of a transfer-set image (data.unlabeled): the teacher labels it, CE never sees it


def read_rgb(path: str):
    """Decode image file ``path`` to an 8-bit RGB PIL image (raises whatever PIL raises)."""
    with Image.open(path) as im:
        return to_rgb(im)


def unreadable_images(paths: Sequence[str], workers: int = 4) -> Dict[str, str]:
    """``{path: reason}`` for every file of ``paths`` that cannot be decoded (each file is decoded once, fully)."""
    def check(path: str) -> Optional[str]:
        try:
            read_rgb(path)
        except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
            return f"{type(e).__name__}: {e}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = list(pool.map(check, list(paths)))
    return {p: r for p, r in zip(paths, reasons) if r is not None}


class FGVCDataset:
    """A list of labelled image files as a map-style dataset.

    Args:
        samples: ``(path, label)`` pairs, labels in ``[0, len(class_names))``.
        class_names: prompt-ready class names, index = label.
        transform: applied to the PIL RGB image (None: the PIL image is returned).
        skip_corrupt: ``data.skip_corrupt`` of the run; unreadable images were dropped from ``samples`` when the
            splits were built (``skipped`` of them), so an image that fails here changed since then: always an error.
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
        path = self.samples[index][0]
        try:
            return read_rgb(path)
        except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
            if self.skip_corrupt:
                raise DataError(
                    f"cannot read image {path} ({type(e).__name__}: {e}); it was readable when the splits were built "
                    f"(data.skip_corrupt=true drops unreadable images then), so it changed during the run. Fix or "
                    f"restore the file and rerun."
                ) from e
            raise DataError(
                f"cannot read image {path} ({type(e).__name__}: {e}). Fix or remove the file, or set "
                f"data.skip_corrupt=true to drop unreadable images (counted and reported)."
            ) from e

    def __getitem__(self, index: int):
        return self.item_from_image(self.load_image(index), index)

    def item_from_image(self, img, index: int):
        """``(transform(img), label)`` of sample ``index`` from its already decoded image ``img``: ``self[index]``
        without decoding the file again (the NSD teacher-cache build decodes an image once for all its views)."""
        label = self.samples[index][1]
        return (self.transform(img) if self.transform is not None else img), label

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
    # data.skip_corrupt=true: split -> the unreadable image files dropped from it (empty when none or off)
    skipped: Dict[str, List[str]] = field(default_factory=dict)
    # data.unlabeled: the transfer set's extra images (label UNLABELED), train transform attached; None when off
    unlabeled: Optional[FGVCDataset] = None

    def transfer_set(self) -> FGVCDataset:
        """What Stage NSD trains on: ``train`` followed by the ``unlabeled`` images (label :data:`UNLABELED`), or
        ``train`` itself when there is no transfer set. Indices ``< len(train)`` are the labelled images."""
        if self.unlabeled is None or len(self.unlabeled) == 0:
            return self.train
        out = copy.copy(self.train)
        out.samples = list(self.train.samples) + list(self.unlabeled.samples)
        out.name = f"{self.train.name}+unlabeled"
        out.skipped = self.train.skipped + self.unlabeled.skipped
        return out

    def prompts(self) -> List[str]:
        """The hand-crafted prompt of every class, in label order."""
        return [self.template.format(n) for n in self.class_names]
