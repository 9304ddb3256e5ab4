"""A generic ImageFolder: ``train/<class>/*``, ``test/<class>/*`` and optionally ``val/<class>/*``.

Expected tree (``data.root``)::

    train/<class_dir>/<image>.{jpg,png,...}
    test/<class_dir>/<image>
    val/<class_dir>/<image>        (optional; used as the validation split when present)
    classes.json                   (optional; {"class_names": [...]} in label order, e.g. from the synthetic benchmark)

Labels follow the sorted ``train/`` class folders and files are collected with the rules of
``torchvision.datasets.ImageFolder`` (sorted class folders, sorted recursive walk, the same extensions), without
importing torch, so a dry run stays fast. A class folder may itself be a symlink, but symlinked folders *inside*
a class folder are not entered (a warning counts them): a link to ``..`` would loop and multiply the images, or
pull in another class's files. A file reached under several names (file symlinks) is listed once; the same file
under two classes is an error. Class names are the folder names cleaned for prompts
("001.Black_footed_Albatross" -> "Black footed Albatross") unless ``classes.json`` gives them.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from pand.errors import DataError
from pand.utils.io import read_json

from .base import Sample
from .layout import RawSplits, clean_class_name, require_files

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LAYOUT = "<root>/{train/<class>/*, test/<class>/*, optional val/<class>/*, optional classes.json}"


def scan_split(directory: Path, class_to_idx: Dict[str, int], dataset: str) -> List[Sample]:
    """Image files under ``directory/<class>/`` (recursively, sorted) labelled by ``class_to_idx``.

    Class folders not in ``class_to_idx`` are an error (a test class the model was never trained on), and so is
    one file (by real path) under two classes. Symlinked sub-folders are not entered; a file listed twice in one
    class (a file symlink) is kept once.
    """
    extra = sorted(d.name for d in os.scandir(directory) if d.is_dir() and d.name not in class_to_idx)
    if extra:
        raise DataError(
            f"{dataset}: {directory} has class folder(s) {extra[:5]} that train/ does not have; every split must use "
            f"the train/ class folders"
        )
    samples: List[Sample] = []
    seen_files: Dict[str, Tuple[str, str]] = {}
    links: List[str] = []
    for cls, idx in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
        cdir = directory / cls
        if not cdir.is_dir():
            continue
        for path in _walk_images(cdir, links):
            real = os.path.realpath(path)
            if real in seen_files:
                first, first_cls = seen_files[real]
                if first_cls != cls:
                    raise DataError(f"{dataset}: {real} is listed under class folders {first_cls!r} ({first}) and "
                                    f"{cls!r} ({path}); an image must belong to one class. Remove one of the links.")
                continue
            seen_files[real] = (path, cls)
            samples.append((path, idx))
    if links:
        warnings.warn(f"{dataset}: {len(links)} symlinked folder(s) inside class folders of {directory} were not "
                      f"entered (e.g. {links[0]}); link the images or the whole class folder instead")
    return samples


def _walk_images(top: Path, links: List[str]) -> List[str]:
    """Image files under ``top`` in ``sorted(os.walk(top))`` order, not entering symlinked sub-folders (appended
    to ``links``); ``top`` itself may be a symlink."""
    out: List[str] = []
    for dirpath, dirnames, fnames in sorted(os.walk(top, followlinks=False)):
        links.extend(os.path.join(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
        out.extend(os.path.join(dirpath, f) for f in sorted(fnames) if f.lower().endswith(IMG_EXTENSIONS))
    return out


def read_classes_json(root: Path, n_classes: int, dataset: str) -> Optional[dict]:
    """``classes.json`` under ``root`` if present, checked to name ``n_classes`` classes."""
    path = root / "classes.json"
    if not path.is_file():
        return None
    try:
        meta = read_json(path)
        names = [str(n) for n in meta["class_names"]]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{dataset}: {path} is not valid ({type(e).__name__}: {e}); expected "
                        f'{{"class_names": [...]}}') from None
    if len(names) != n_classes:
        raise DataError(f"{dataset}: {path} names {len(names)} classes but train/ has {n_classes} class folders")
    return meta


def load_imagefolder(root: Path, cfg: DataCfg, dataset: str = "imagefolder") -> RawSplits:
    """Read an ImageFolder tree with ``train/``, ``test/`` and optional ``val/``."""
    require_files(root, dataset, ["train", "test"], LAYOUT)
    classes = sorted(e.name for e in os.scandir(root / "train") if e.is_dir())
    if not classes:
        raise DataError(f"{dataset}: {root / 'train'} has no class folders; expected train/<class>/<image>")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    splits = {s: scan_split(root / s, class_to_idx, dataset) for s in ("train", "val", "test") if (root / s).is_dir()}
    meta = read_classes_json(root, len(classes), dataset)
    names = [str(n) for n in meta["class_names"]] if meta else [clean_class_name(c) for c in classes]
    return RawSplits(
        train=splits["train"], val=splits.get("val"), test=splits["test"], class_names=names, root=root,
        sources={s: f"{s}/" for s in splits},
    )
