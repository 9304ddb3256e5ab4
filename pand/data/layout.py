"""What a dataset loader returns (:class:`RawSplits`) and the helpers the loaders share.

A loader (one per official on-disk layout: ``cub.py``, ``aircraft.py``, ...) is a function
``load(root: Path, data_cfg) -> RawSplits``. It reads the dataset's own metadata files and returns
``(absolute image path, label)`` lists for the official splits, the class names in label order (cleaned for prompts)
and, where the dataset ships one, the official validation split. Hold-out validation, the label budget and the checks
shared by every dataset (missing images, empty classes, duplicate names) happen afterwards in
:func:`pand.data.build_splits`. The loaders import this module; :mod:`pand.data.registry` imports the loaders.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from pand.errors import DataError, PandError
from pand_runtime.class_names import clean_class_name  # one normalisation for training and pand-bench --images

from .base import Sample

__all__ = ["RawSplits", "clean_class_name", "require_files", "read_table", "descend", "tv_attr", "torchvision_root"]


@dataclass
class RawSplits:
    """What a loader reads from disk, before hold-out validation and checks.

    Attributes:
        train: official training samples ``(absolute path, label)``.
        test: official test samples.
        class_names: prompt-ready names, index = label.
        root: the dataset folder that was read.
        val: the official validation split, or None when the dataset has none (then val is held out of train).
        captions: optional absolute image path -> caption (synthetic benchmark).
        sources: split name -> metadata file the split came from (used in error messages).
    """

    train: List[Sample]
    test: List[Sample]
    class_names: List[str]
    root: Path
    val: Optional[List[Sample]] = None
    captions: Optional[Dict[str, str]] = None
    sources: Dict[str, str] = field(default_factory=dict)


def require_files(root: Path, dataset: str, relpaths: Sequence[str], layout: str = "") -> None:
    """Raise :class:`DataError` naming every missing file/folder of ``relpaths`` under ``root``."""
    if not root.is_dir():
        raise DataError(
            f"{dataset}: data.root {root} is not a directory. Expected layout: {layout or ', '.join(relpaths)}")
    missing = [p for p in relpaths if not (root / p).exists()]
    if missing:
        raise DataError(
            f"{dataset}: data.root {root} is missing {', '.join(missing)}. Expected layout: "
            f"{layout or ', '.join(relpaths)}. Point data.root at the folder that holds these files."
        )


def read_table(path: Path, ncols: int, dataset: str) -> List[List[str]]:
    """Whitespace-separated rows of a metadata file; the last column keeps its inner spaces.

    Blank lines and ``#`` comments are skipped. Raises :class:`DataError` naming the file and line when a row
    has fewer than ``ncols`` fields.
    """
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, ncols - 1)
            if len(parts) < ncols:
                raise DataError(f"{dataset}: {path}:{lineno}: expected {ncols} fields, got {line!r}")
            rows.append(parts)
    return rows


def descend(root: Path, subdirs: Sequence[str], marker: str) -> Path:
    """``root/<subdir>`` when ``root`` lacks ``marker`` but that sub-folder has it (torchvision's download layout).

    Lets ``data.root`` point either at the dataset folder itself or at the folder torchvision downloaded into
    (e.g. ``<root>/fgvc-aircraft-2013b/data``).
    """
    if (root / marker).exists():
        return root
    for sub in subdirs:
        if (root / sub / marker).exists():
            return root / sub
    return root


def tv_attr(ds: Any, name: str) -> Any:
    """A (private) attribute of a torchvision dataset, with a clear error if this torchvision lacks it."""
    if not hasattr(ds, name):
        import torchvision  # the torchvision-backed loaders import it when used; never at import time

        raise PandError(
            f"torchvision {torchvision.__version__}: {type(ds).__name__} has no attribute {name!r}; pand reads the "
            f"sample list from it. Install a torchvision between 0.16 and 0.29 (pip install 'pand[train]')."
        )
    return getattr(ds, name)


@contextmanager
def torchvision_root(root: Path, subdir: str) -> Iterator[Tuple[str, Callable[[Any], str]]]:
    """Adapt a user's dataset folder to the fixed sub-folder name a torchvision dataset class expects.

    torchvision reads e.g. ``<root>/oxford-iiit-pet/images``; pand's ``data.root`` is the dataset folder
    itself, whatever its name. Yields ``(tv_root, to_real)``: the ``root`` argument for the torchvision class,
    and a function mapping a path it produced back to the real path under ``root``. Accepts ``root`` named
    ``subdir`` (uses its parent), ``root`` that contains ``subdir``, and otherwise links ``subdir`` to
    ``root`` inside a temporary folder.
    """
    sub = Path(subdir)
    root = Path(os.path.abspath(root))
    n = len(sub.parts)
    if root.parts[-n:] == sub.parts:
        tv_root = root
        for _ in range(n):
            tv_root = tv_root.parent
        yield str(tv_root), str
        return
    if (root / sub).is_dir():
        yield str(root), str
        return
    tmp = Path(tempfile.mkdtemp(prefix="pand-tv-"))
    try:
        link = tmp / sub
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(root, link, target_is_directory=True)
        except OSError as e:  # e.g. Windows without symlink rights
            raise DataError(
                f"cannot adapt {root} to torchvision's layout (symlink failed: {e}). Rename the folder to "
                f"'{sub.parts[-1]}' or place it at <data.root>/{subdir}."
            ) from e
        prefix = str(link)

        def to_real(p: Any) -> str:
            s = str(p)
            return str(root) + s[len(prefix):] if s.startswith(prefix) else s

        yield str(tmp), to_real
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
