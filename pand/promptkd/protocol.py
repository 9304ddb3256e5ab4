"""PromptKD protocol pieces: base-to-novel split, unlabeled distillation pools, metrics, LR schedule, KD weight.

Base-to-novel (``docs/method.md``): class ids sorted, ``m = ceil(C/2)``; base = the first ``m``, novel =
the rest. Base accuracy = test images of base classes classified among the base classes only; novel likewise;
``HM = 2 * B * N / (B + N)``.

Unlabeled distillation pools (``promptkd.pool``; labels are never read in training):

* ``reference`` (default): the training split of **all** classes, base and novel; no test image. This is what the
  PromptKD reference code distils on (its dataset classes' train split, labels unused).
* ``inductive``: the training split of the **base** classes only; no novel-class image and no test image.
* ``transductive`` (opt-in): the training split of all classes plus the **test** images, more than the reference
  uses. Results are not comparable with the other pools; the summaries say so in capitals.

The old key ``promptkd.regime`` (``inductive`` | ``transductive``) is read as ``pool`` (:func:`resolve_pool`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from pand.data.base import UNLABELED
from pand.data.splits import base_novel_split
from pand.engine.optim import cosine_lr
from pand.errors import DataError

__all__ = [
    "resolve_base_novel",
    "check_base_novel",
    "POOLS",
    "REFERENCE_KD_WEIGHTS",
    "REFERENCE_KD_WEIGHT_DEFAULT",
    "resolve_pool",
    "resolve_kd_weight",
    "build_pool",
    "check_pool",
    "check_regime",
    "UnlabeledDataset",
    "subset_by_classes",
    "harmonic_mean",
    "subset_accuracy",
    "promptkd_lr",
    "pool_class_ids",
]


def resolve_base_novel(splits) -> Tuple[List[int], List[int]]:
    """Base and novel class ids of a run: ``splits.base_classes``/``novel_classes`` when the data layer set them,
    else :func:`pand.data.splits.base_novel_split` over all class ids (first ``ceil(C/2)`` sorted ids = base).

    Raises:
        DataError: either side is empty (fewer than two classes) or they overlap.
    """
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
    """Wraps datasets that return ``(image, label)`` and returns ``(image, UNLABELED)``: labels cannot leak into
    training.

    (The placeholder :data:`pand.data.base.UNLABELED` (-1), the label of Stage NSD's transfer-set images too, keeps
    the ``(image, label)`` item shape that the shared loaders expect.)

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
                return part[index - off][0], UNLABELED
        raise IndexError(index)  # pragma: no cover


POOLS = ("reference", "inductive", "transductive")

# The reference scripts' KD_WEIGHT per dataset (scripts/promptkd/*.sh; the yaml value 1.0 is always overridden):
# 200 for FGVC-Aircraft, Flowers-102 and DTD, 1000 for every other dataset.
REFERENCE_KD_WEIGHTS = {"fgvc_aircraft": 200.0, "flowers102": 200.0, "dtd": 200.0}
REFERENCE_KD_WEIGHT_DEFAULT = 1000.0


def resolve_kd_weight(pk, dataset: str) -> Tuple[float, str]:
    """``(kd_weight, where it came from)``: ``promptkd.kd_weight`` when set, else the reference's per-dataset value."""
    value = pk.kd_weight
    if value is not None:
        return float(value), "promptkd.kd_weight (set in the config)"
    if dataset in REFERENCE_KD_WEIGHTS:
        return REFERENCE_KD_WEIGHTS[dataset], f"reference value for {dataset}"
    return REFERENCE_KD_WEIGHT_DEFAULT, f"reference value for datasets other than {', '.join(REFERENCE_KD_WEIGHTS)}"


def resolve_pool(pk) -> str:
    """The pool of a ``promptkd`` config section, reading the deprecated ``regime`` key as an alias.

    Raises:
        DataError: an unknown pool, or a ``regime`` that contradicts an explicitly different ``pool``.
    """
    pool, regime = str(pk.pool), pk.regime
    if regime is not None:
        regime = str(regime)
        if regime not in ("inductive", "transductive"):
            raise DataError(f"unknown promptkd.regime '{regime}' (deprecated: use promptkd.pool={'|'.join(POOLS)})")
        if pool != "reference" and pool != regime:
            raise DataError(f"promptkd.regime={regime} (deprecated) contradicts promptkd.pool={pool}; "
                            f"set only promptkd.pool")
        pool = regime
    if pool not in POOLS:
        raise DataError(f"unknown promptkd.pool '{pool}'. Valid choices: {', '.join(POOLS)}")
    return pool


def check_pool(splits, pool: str) -> None:
    """Raise :class:`DataError` for an unknown pool, or ``transductive`` on a dataset without test images."""
    if pool not in POOLS:
        raise DataError(f"unknown promptkd.pool '{pool}'. Valid choices: {', '.join(POOLS)}")
    if pool == "transductive" and (splits.test is None or len(splits.test) == 0):
        raise DataError(
            "promptkd.pool=transductive puts the unlabeled test images into the distillation pool, but this "
            "dataset has no test split. Use promptkd.pool=reference (all training images) or inductive."
        )


check_regime = check_pool  # old name


def pool_class_ids(pool: str, base: Sequence[int], novel: Sequence[int]) -> List[int]:
    """Classes in the training logits: the base classes (inductive) or all classes (reference, transductive)."""
    return list(base) if pool == "inductive" else sorted(list(base) + list(novel))


def build_pool(splits, pool: str, base_classes: Sequence[int], transform=None) -> Tuple[UnlabeledDataset, List]:
    """The unlabeled distillation pool.

    Args:
        splits: :class:`pand.data.DataSplits`.
        pool: ``reference`` (train images of all classes), ``inductive`` (train images of the base classes) or
            ``transductive`` (train images of all classes plus the test images). ``reference`` and ``transductive``
            also take the run's unlabelled images (``data.unlabeled``, :meth:`DataSplits.transfer_set`: the same
            transfer set Stage NSD distils on); ``inductive`` does not (their classes are unknown).
        base_classes: base class ids.
        transform: training transform applied to every image.

    Returns:
        ``(pool, parts)``: the image-only dataset and the labelled parts it is made of (for audits).

    Raises:
        DataError: unknown pool, an empty pool, or transductive mode without a test split.
    """
    check_pool(splits, pool)
    if pool == "inductive":
        parts = [subset_by_classes(splits.train, base_classes, name=f"{splits.train.name}[base]")]
    elif pool == "reference":
        parts = [splits.train]
    else:
        parts = [splits.train, splits.test]
    extra = getattr(splits, "unlabeled", None)
    if pool != "inductive" and extra is not None and len(extra):
        parts.append(extra)
    parts = [p.with_transform(transform) for p in parts]
    dataset = UnlabeledDataset(parts)
    if len(dataset) == 0:
        what = "of the base classes" if pool == "inductive" else ""
        raise DataError(f"the {pool} distillation pool is empty: no training images {what}".rstrip())
    return dataset, parts


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
    This is the scaffold's :func:`pand.engine.optim.cosine_lr` with ``cosine_epochs=epochs``.
    """
    return cosine_lr(epoch, base_lr, epochs, warmup_epochs, warmup_lr, cosine_epochs=epochs)
