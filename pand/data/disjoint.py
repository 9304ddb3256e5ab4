"""Splits are disjoint by content, not by path: no image may be in two of train / val / test.

A file symlink (``train/c/x.png -> ../../val/c/y.png``), a hard link or a linked class folder
(``val/c3 -> ../train/c3``) puts the same file under two paths; a copy puts the same bytes in two files. Either way
the evaluation would measure images the model was trained on (or selected on). :func:`check_disjoint_splits`
resolves every image to its file identity (device and inode, the real path where the filesystem has no inode
numbers) and, among the files of different splits that have the same size, compares a content digest
(:func:`pand.utils.digest.file_digest`). An image in two splits is a :class:`~pand.errors.DataError` naming both
paths; there is no option to allow it.
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from pand.errors import DataError
from pand.utils.digest import file_digest

from .base import Sample

__all__ = ["check_disjoint_splits"]


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
