"""Accuracy of a bundle in ``pand-bench``, without torch: on the parity images stored in its ``reference.npz`` (labels and
PyTorch logits included), or on a labelled image folder (``--images``)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .bench_rows import BenchOptions, BenchRow
from .errors import PandError
from .manifest import REFERENCE_NAME, Manifest, bundle_file, load_manifest
from .metrics import compare_logits
from .predictor import Predictor
from .preprocess import normalize_u8

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder", "folder_top1", "folder_source", "parity_source",
           "measure_accuracy", "reference_of"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def load_image_folder(root: Path, class_names: Sequence[str]) -> tuple[List[Path], np.ndarray, str]:
    """Labelled images ``root/<class>/<file>``: ``(paths, labels, note)``.

    Folder names must equal the bundle's class names; if none do and there is one folder per class, the sorted
    folders are taken in label order (torchvision ImageFolder's convention) and ``note`` says so.
    """
    dirs = sorted(d for d in Path(root).iterdir() if d.is_dir()) if Path(root).is_dir() else []
    if not dirs:
        raise PandError(f"--images {root}: expected class folders <dir>/<class name>/<images>")
    index = {c: i for i, c in enumerate(class_names)}
    note = "folder names = class names"
    if any(d.name in index for d in dirs):
        unknown = [d.name for d in dirs if d.name not in index]
        if unknown:
            raise PandError(f"--images {root}: folder(s) {unknown[:3]} are not classes of the bundle")
        mapping = {d: index[d.name] for d in dirs}
    elif len(dirs) == len(class_names):
        mapping = {d: i for i, d in enumerate(dirs)}
        note = "sorted folders in label order"
    else:
        raise PandError(f"--images {root}: {len(dirs)} folders match none of the bundle's {len(class_names)} classes")
    paths, labels = [], []
    for d, y in mapping.items():
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(p)
                labels.append(y)
    return paths, np.asarray(labels, dtype=np.int64), note


def parity_source(manifest: Optional[Manifest], n: int) -> str:
    """What the bundle's parity images are, e.g. ``256 parity images (a seeded subset of the 360 test images)``."""
    p = (manifest.parity if manifest is not None else None) or {}
    split, total = p.get("split", "test"), p.get("split_images")
    if split == "random":
        return f"{n} random parity images (no labels: the dataset was not available at export)"
    if total and n < int(total):
        return f"{n} parity images (a seeded subset of the {total} {split} images)"
    if total:
        return f"all {n} {split} images (the bundle's parity images)"
    return f"{n} parity images ({split} split)"


def folder_source(root: Path, note: str, n: int) -> str:
    """What ``--images`` top-1 is measured on, e.g. ``all 360 images of data/test (folder names = class names)``."""
    return f"all {n} images of {root} ({note})"


def folder_top1(root: Path, class_names: Sequence[str], logits_of) -> tuple[float, int, str]:
    """Top-1 on the labelled folder ``root``: ``(top1, n, source)``; ``logits_of(paths) -> [n, C]`` runs one chunk
    of at most 32 image paths through the model (any model: a bundle's predictor or the PyTorch student, fed with
    the same runtime preprocessing)."""
    paths, labels, note = load_image_folder(root, class_names)
    if not paths:
        raise PandError(f"--images {root}: the class folders hold no images ({', '.join(IMAGE_EXTENSIONS)})")
    preds = np.concatenate([np.asarray(logits_of([str(p) for p in paths[i:i + 32]])).argmax(1)
                            for i in range(0, len(paths), 32)])
    return float(np.mean(preds == labels)), len(paths), folder_source(root, note, len(paths))


def measure_accuracy(predictor: Predictor, row: BenchRow, opts: BenchOptions) -> None:
    """Fill ``row``'s accuracy columns.

    * agreement and max |logit diff|: against the PyTorch logits stored in the bundle, on its parity images
      (:attr:`BenchRow.agreement_source` says which);
    * top-1: with ``opts.images`` on that labelled folder (all its images), else on the parity images when they are
      labelled (:attr:`BenchRow.eval_source` says which). The PyTorch rows (``--pytorch``) use the same images.
    """
    ref = predictor.reference()
    if ref is not None and len(ref.get("logits", [])):
        logits = predictor.run(normalize_u8(ref["images_u8"], predictor.spec))
        labels = ref.get("labels")
        labels = labels if labels is not None and len(labels) else None
        res = compare_logits(ref["logits"], logits, labels)
        source = parity_source(getattr(predictor, "manifest", None), res.n)
        row.agreement, row.max_abs_diff, row.agreement_source = res.top1_agreement, res.max_abs, source
        if labels is not None:
            row.top1, row.n_eval, row.eval_source = res.acc_out, res.n, source
            row.details["reference_top1"] = res.acc_ref
    if opts.images is not None:
        row.top1, row.n_eval, row.eval_source = folder_top1(opts.images, predictor.class_names,
                                                            predictor.predict_logits)


def reference_of(bundles: Sequence[Path]) -> tuple[Optional[Dict[str, np.ndarray]], Optional[Manifest]]:
    """The first bundle's ``reference.npz`` and manifest (the images every row is timed and judged on)."""
    for b in bundles:
        try:
            m = load_manifest(b)
            path = bundle_file(b, m.reference or REFERENCE_NAME, "reference")
            if path.is_file():
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}, m
        except Exception:  # noqa: BLE001 - a broken bundle is reported by its own row
            continue
    return None, None
