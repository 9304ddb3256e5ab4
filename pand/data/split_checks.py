"""Checks of the final splits (:func:`check_final_splits`, called once by :func:`pand.data.build_splits`).

**Disjoint by content, not by path**: no image may be in two of train / val / test.

A file symlink (``train/c/x.png -> ../../val/c/y.png``), a hard link or a linked class folder
(``val/c3 -> ../train/c3``) puts the same file under two paths; a copy puts the same bytes in two files. Either way
the evaluation would measure images the model was trained on (or selected on). :func:`check_disjoint_splits`
resolves every image to its file identity (device and inode, the real path where the filesystem has no inode
numbers) and, among the files of different splits that have the same size, compares a content digest
(:func:`pand.utils.digest.file_digest`). An image in two splits is a :class:`~pand.errors.DataError` naming both
paths; there is no option to allow it.

**Class coverage of val and test** (:func:`report_class_coverage`): a class without a single val or test image is
not measured there (an empty test class folder, a val split missing classes); a warning names those classes with the
split's image counts. Train must cover every class (an error, checked earlier).
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from pand.errors import DataError
from pand.utils.digest import file_digest

from .base import Sample

__all__ = ["check_final_splits", "check_disjoint_splits", "report_class_coverage"]

_MAX_LISTED = 5


def check_final_splits(dataset: str, class_names: Sequence[str],
                       splits: Mapping[str, Optional[Sequence[Sample]]]) -> None:
    """:func:`check_disjoint_splits`, then :func:`report_class_coverage` of every split but train."""
    check_disjoint_splits(dataset, splits)
    report_class_coverage(dataset, class_names, {k: v for k, v in splits.items() if k != "train"})


def report_class_coverage(dataset: str, class_names: Sequence[str],
                          splits: Mapping[str, Optional[Sequence[Sample]]]) -> Dict[str, List[int]]:
    """Warn about classes with no images in a split (a split that is None is absent, not empty).

    Returns:
        split -> the labels with no images there (only splits that miss some).
    """
    missing: Dict[str, List[int]] = {}
    for split, samples in splits.items():
        if samples is None:
            continue
        counts = Counter(y for _, y in samples)
        absent = [c for c in range(len(class_names)) if counts[c] == 0]
        if not absent:
            continue
        missing[split] = absent
        shown = ", ".join(f"{c} ({class_names[c]})" for c in absent[:_MAX_LISTED])
        warnings.warn(
            f"{dataset}: {len(absent)} of {len(class_names)} classes have no {split} images: {shown}"
            f"{', ...' if len(absent) > _MAX_LISTED else ''} ({split}: {len(samples)} images in "
            f"{len(class_names) - len(absent)} classes); their {split} accuracy is not measured. Add images to those "
            f"class folders, or {'raise data.val_fraction' if split == 'val' else 'remove the classes'}.")
    return missing


def _refuse(dataset: str, first: Tuple[str, str], second: Tuple[str, str], why: str) -> None:
    raise DataError(
        f"{dataset}: the same image is in the {first[0]} and {second[0]} splits: {first[1]} and {second[1]} ({why}). "
        f"Splits must be disjoint, or evaluation measures images the model was trained or selected on. Remove one "
        f"of them from the dataset folder (a link, a hard link, a linked class folder or a copy)."
    )


def check_disjoint_splits(dataset: str, splits: Mapping[str, Optional[Sequence[Sample]]]) -> None:
    """Refuse an image (by file identity, or by identical bytes) present in two splits.

    Args:
        dataset: the dataset name, for the message.
        splits: split name -> ``[(path, label)]`` (None or empty for an absent split), the final splits.

    Raises:
        DataError: naming the two splits, both paths, and whether they are one file or identical copies.
    """
    identity: Dict[object, Tuple[str, str]] = {}
    by_size: Dict[int, List[Tuple[str, str]]] = {}
    for split, samples in splits.items():
        for path, _ in samples or ():
            try:
                st = os.stat(path)
            except OSError:
                continue  # a missing file is reported by the split checks
            key = (st.st_dev, st.st_ino) if st.st_ino else ("path", os.path.realpath(path))
            first = identity.get(key)
            if first is None:
                identity[key] = (split, path)
                by_size.setdefault(st.st_size, []).append((split, path))
            elif first[0] != split:
                _refuse(dataset, first, (split, path), f"one file: {os.path.realpath(path)}")
    for members in by_size.values():
        if len({split for split, _ in members}) < 2:
            continue
        seen: Dict[str, Tuple[str, str]] = {}
        for split, path in members:
            try:
                digest = file_digest(path)
            except OSError:
                continue
            first = seen.setdefault(digest, (split, path))
            if first[0] != split:
                _refuse(dataset, first, (split, path), "identical bytes")
