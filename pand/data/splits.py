"""Pure split functions: stratified hold-out validation, label budget, base-to-novel classes.

All functions take label lists and return index lists; they never look at the test split. Randomness
comes from ``numpy.random.default_rng([seed, class_id, stream])``, so each class is shuffled by its own
stream: the result depends only on the seed and on the order of that class's samples, not on the other
classes or on how many there are.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["per_class_indices", "holdout_count", "stratified_holdout", "label_budget", "base_novel_split"]

_HOLDOUT_STREAM = 0
_BUDGET_STREAM = 1


def per_class_indices(labels: Sequence[int]) -> Dict[int, List[int]]:
    """``{label: [indices in ascending order]}`` for every label present."""
    out: Dict[int, List[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        out[int(y)].append(i)
    return dict(out)


def holdout_count(n: int, fraction: float) -> int:
    """How many of a class's ``n`` training images go to validation.

    ``k = round(fraction * n)`` clipped to ``[1, n - 1]`` when ``n >= 2`` and ``fraction > 0`` (every class
    with two or more images gets at least one val image and keeps at least one train image); ``k = 0`` when
    ``n < 2`` or ``fraction <= 0``.
    """
    if fraction <= 0 or n < 2:
        return 0
    return int(min(max(int(round(fraction * n)), 1), n - 1))


def _shuffled(indices: List[int], seed: int, label: int, stream: int) -> List[int]:
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(label), stream])
    return [indices[i] for i in rng.permutation(len(indices))]


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Split training indices into (train, val), class by class.

    Each class ``c`` with ``n_c`` images loses ``holdout_count(n_c, fraction)`` images, chosen by a seeded
    permutation of its indices, to validation.

    Args:
        labels: ``[N]`` training labels.
        fraction: share of each class held out, in ``[0, 1)``.
        seed: the ``data.val_seed``.

    Returns:
        ``(train_idx, val_idx)``: disjoint, together all of ``range(N)``, each sorted ascending.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    train, val = [], []
    for label, idx in per_class_indices(labels).items():
        k = holdout_count(len(idx), fraction)
        perm = _shuffled(idx, seed, label, _HOLDOUT_STREAM)
        val.extend(perm[:k])
        train.extend(perm[k:])
    return sorted(train), sorted(val)


def label_budget(labels: Sequence[int], per_class: int, seed: int) -> List[int]:
    """Indices that keep at most ``per_class`` images of every class (seeded choice), sorted ascending.

    Classes with fewer images keep all of them.
    """
    if per_class < 1:
        raise ValueError(f"labels_per_class must be >= 1, got {per_class}")
    keep: List[int] = []
    for label, idx in per_class_indices(labels).items():
        keep.extend(_shuffled(idx, seed, label, _BUDGET_STREAM)[:per_class])
    return sorted(keep)


def base_novel_split(class_ids: Sequence[int]) -> Tuple[List[int], List[int]]:
    """Base-to-novel protocol (docs/method.md): sort the ids, the first ``ceil(C / 2)`` are base.

    Returns:
        ``(base, novel)`` class ids, each ascending.
    """
    ids = sorted(set(int(c) for c in class_ids))
    m = math.ceil(len(ids) / 2)
    return ids[:m], ids[m:]
