"""PromptKD protocol pieces: base-to-novel split, unlabeled pools (inductive / transductive), metrics, LR schedule.

Base-to-novel (``docs/ALGORITHMS.md`` 4.5): class ids sorted, ``m = ceil(C/2)``; base = the first ``m``, novel =
the rest. Base accuracy = test images of base classes classified among the base classes only; novel likewise;
``HM = 2 * B * N / (B + N)``.

Regimes of the unlabeled distillation pool (labels are never read in training):

* ``inductive`` (default): the training split of the **base** classes only; no novel-class image and no test image.
* ``transductive`` (opt-in, the reference's protocol for cross-dataset): the training split of all classes plus
  the test images. Results are then not comparable with inductive methods; the summaries say so in capitals.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

from pand.errors import DataError

__all__ = [
    "resolve_base_novel",
    "check_base_novel",
    "build_pool",
    "check_regime",
    "UnlabeledDataset",
    "subset_by_classes",
    "harmonic_mean",
    "subset_accuracy",
    "promptkd_lr",
]


def resolve_base_novel(splits) -> Tuple[List[int], List[int]]:
    """Base and novel class ids of a run: ``splits.base_classes``/``novel_classes`` when the data layer set them,
    else :func:`pand.data.splits.base_novel_split` over all class ids (first ``ceil(C/2)`` sorted ids = base).

    Raises:
        DataError: either side is empty (fewer than two classes) or they overlap.
    """
    from pand.data.splits import base_novel_split

    if splits.base_classes is not None and splits.novel_classes is not None:
        base, novel = sorted(int(c) for c in splits.base_classes), sorted(int(c) for c in splits.novel_classes)
    else:
        base, novel = base_novel_split(range(len(splits.class_names)))
    check_base_novel(base, novel)
    return base, novel


def check_base_novel(base: Optional[Sequence[int]], novel: Optional[Sequence[int]]) -> None:
    """Raise :class:`DataError` when the base or the novel side is empty, or they overlap."""
    if not base or not novel:
        raise DataError(
            f"the base-to-novel split has an empty side (base={len(base or [])} classes, novel={len(novel or [])}). "
            f"PromptKD's protocol needs at least 2 classes; check data.class_names / the dataset."
        )
    overlap = set(base) & set(novel)
    if overlap:
        raise DataError(f"base and novel classes overlap: {sorted(overlap)[:10]}")


def subset_by_classes(dataset, class_ids: Sequence[int], name: Optional[str] = None):
    """The samples of ``dataset`` (an :class:`pand.data.FGVCDataset`) whose label is in ``class_ids``."""
    keep = set(int(c) for c in class_ids)
    idx = [i for i, (_, y) in enumerate(dataset.samples) if y in keep]
    return dataset.subset(idx, name=name)


class UnlabeledDataset:
    """Wraps datasets that return ``(image, label)`` and returns ``(image, -1)``: labels cannot leak into training.

    (The ``-1`` placeholder keeps the ``(image, label)`` item shape that the shared loaders expect.)

    Args:
        parts: datasets concatenated in order.
    """

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        self._offsets = []
        n = 0
        for p in self.parts:
            self._offsets.append(n)
            n += len(p)
        self._len = n

    def __len__(self) -> int:
        return self._len

    @property
    def paths(self) -> List[str]:
        """Image files of the pool (for audits and tests)."""
        return [s[0] for p in self.parts for s in p.samples]

    def __getitem__(self, index: int):
        if index < 0 or index >= self._len:
            raise IndexError(index)
        for part, off in zip(reversed(self.parts), reversed(self._offsets)):
            if index >= off:
                return part[index - off][0], -1
        raise IndexError(index)  # pragma: no cover


def check_regime(splits, regime: str) -> None:
    """Raise :class:`DataError` for an unknown regime, or ``transductive`` on a dataset without test images."""
    if regime not in ("inductive", "transductive"):
        raise DataError(f"unknown promptkd.regime '{regime}'. Valid choices: inductive, transductive")
    if regime == "transductive" and (splits.test is None or len(splits.test) == 0):
        raise DataError(
            "promptkd.regime=transductive puts the unlabeled test images into the distillation pool, but this "
            "dataset has no test split. Use promptkd.regime=inductive or a dataset with a test split."
        )


def build_pool(splits, regime: str, base_classes: Sequence[int], transform=None) -> Tuple[UnlabeledDataset, List]:
    """The unlabeled distillation pool of a regime.

    Args:
        splits: :class:`pand.data.DataSplits`.
        regime: ``inductive`` (train images of base classes) or ``transductive`` (train images of all classes plus
            the test images).
        base_classes: base class ids.
        transform: training transform applied to every image.

    Returns:
        ``(pool, parts)``: the image-only dataset and the labelled parts it is made of (for audits).

    Raises:
        DataError: unknown regime, an empty pool, or transductive mode without a test split.
    """
    check_regime(splits, regime)
    if regime == "inductive":
        parts = [subset_by_classes(splits.train, base_classes, name=f"{splits.train.name}[base]")]
    else:
        parts = [splits.train, splits.test]
    parts = [p.with_transform(transform) for p in parts]
    pool = UnlabeledDataset(parts)
    if len(pool) == 0:
        raise DataError(f"the {regime} distillation pool is empty: no training images of the base classes")
    return pool, parts


def harmonic_mean(base: float, novel: float) -> float:
    """``HM = 2 * B * N / (B + N)`` (0 when both are 0)."""
    return 0.0 if base + novel <= 0 else 2.0 * base * novel / (base + novel)


def subset_accuracy(features, labels, class_vectors, class_ids: Sequence[int]) -> Tuple[float, int]:
    """Top-1 accuracy of the images whose label is in ``class_ids``, classified among ``class_ids`` only.

    ``pred = class_ids[argmax_k f . T[class_ids[k]]]`` for normalised features ``f [N, D]`` and class vectors
    ``T [C, D]``; the logit scale does not change the argmax.

    Args:
        features: ``[N, D]`` image features.
        labels: ``[N]`` long labels (ids in ``0..C-1``).
        class_vectors: ``[C, D]``.
        class_ids: the candidate classes (and the images kept).

    Returns:
        ``(accuracy in percent, number of images)``; ``(0.0, 0)`` when no image has a label in ``class_ids``.
    """
    import torch

    ids = torch.as_tensor(list(class_ids), dtype=torch.long, device=labels.device)
    mask = torch.isin(labels, ids)
    n = int(mask.sum())
    if n == 0:
        return 0.0, 0
    scores = features[mask].float() @ class_vectors[ids.to(class_vectors.device)].float().T.to(features.device)
    pred = ids[scores.argmax(dim=1)]
    return 100.0 * float((pred == labels[mask]).float().mean()), n


def promptkd_lr(epoch: int, base_lr: float, epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """Learning rate of (0-based) ``epoch``: Dassl's constant warm-up followed by cosine.

    ``lr(e) = warmup_lr`` for ``e < W``; otherwise ``lr(e) = base_lr * (1 + cos(pi * (e - W) / E)) / 2`` with
    ``E = epochs`` (the cosine's ``T_max`` is the full epoch count, as in Dassl, so the last epoch's LR stays > 0).
    """
    if epoch < warmup_epochs:
        return float(warmup_lr)
    return float(base_lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / max(1, epochs))))
