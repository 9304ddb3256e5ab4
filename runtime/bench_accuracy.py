"""Accuracy of a bundle in ``pand-bench``, without torch: on the parity images stored in its ``reference.npz`` (labels and
PyTorch logits included), or on a labelled image folder (``--images``)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .bench_rows import BenchOptions, BenchRow
from .class_names import class_key
from .errors import PandError
from .manifest import REFERENCE_NAME, Manifest, bundle_file, load_manifest
from .metrics import compare_logits
from .predictor import Predictor
from .preprocess import normalize_u8
from .reference import load_reference

__all__ = ["IMAGE_EXTENSIONS", "LABEL_ORDERS", "load_image_folder", "folder_top1", "folder_source", "parity_source",
           "measure_accuracy", "reference_of"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


LABEL_ORDERS = ("names", "sorted")


def load_image_folder(root: Path, class_names: Sequence[str], label_order: str = "names"
                      ) -> tuple[List[Path], np.ndarray, str]:
    """Labelled images ``root/<class>/<file>``: ``(paths, labels, note)``.

    ``label_order="names"`` (the default): every folder maps to the bundle class of the same name after the
    normalisation training applies to folder names (:func:`pand_runtime.class_names.class_key`: numeric and WordNet
    prefixes dropped, ``_`` as spaces, Unicode NFC; case counts). A folder that maps to no class is an error listing
    the unmapped folders and the bundle's class names; classes without a folder are simply not evaluated.
    ``label_order="sorted"`` (explicit opt-in): the sorted folders are labels ``0..C-1`` (torchvision ImageFolder's
    convention); there must be one folder per class.

    Raises:
        PandError: no class folders, unmapped folders, two folders for one class, or (sorted) a folder count that
            is not the class count.
    """
    if label_order not in LABEL_ORDERS:
        raise PandError(f"--label-order {label_order!r}: use one of {', '.join(LABEL_ORDERS)}")
    dirs = sorted(d for d in Path(root).iterdir() if d.is_dir()) if Path(root).is_dir() else []
    if not dirs:
        raise PandError(f"--images {root}: expected class folders <dir>/<class name>/<images>")
    if label_order == "sorted":
        if len(dirs) != len(class_names):
            raise PandError(f"--images {root} --label-order sorted: {len(dirs)} folders for the bundle's "
                            f"{len(class_names)} classes; sorted order needs one folder per class")
        mapping = {d: i for i, d in enumerate(dirs)}
        note = "--label-order sorted: sorted folders are labels 0..C-1, not matched by name"
    else:
        index = {class_key(c): i for i, c in enumerate(class_names)}
        unmapped = [d.name for d in dirs if class_key(d.name) not in index]
        if unmapped:
            shown = ", ".join(repr(n) for n in unmapped[:8]) + (", ..." if len(unmapped) > 8 else "")
            classes = ", ".join(repr(c) for c in list(class_names)[:12]) + (", ..." if len(class_names) > 12 else "")
            raise PandError(
                f"--images {root}: {len(unmapped)} of {len(dirs)} folders match no class of the bundle: {shown}. "
                f"Folder names must be the class names ({classes}); rename them, or pass --label-order sorted to "
                f"take the sorted folders as labels 0..{len(class_names) - 1}")
        mapping, seen = {}, {}
        for d in dirs:
            y = index[class_key(d.name)]
            if y in seen:
                raise PandError(f"--images {root}: folders {seen[y]!r} and {d.name!r} both name class "
                                f"{class_names[y]!r}")
            seen[y], mapping[d] = d.name, y
        note = "folder names = class names"
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


def folder_top1(root: Path, class_names: Sequence[str], logits_of, label_order: str = "names"
                ) -> tuple[float, int, str]:
    """Top-1 on the labelled folder ``root``: ``(top1, n, source)``; ``logits_of(paths) -> [n, C]`` runs one chunk
    of at most 32 image paths through the model (any model: a bundle's predictor or the PyTorch student, fed with
    the same runtime preprocessing); folders map to classes as :func:`load_image_folder` says (``label_order``)."""
    paths, labels, note = load_image_folder(root, class_names, label_order)
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
                                                            predictor.predict_logits, opts.label_order)
        if opts.label_order == "sorted":  # shown in the table, not only in the JSON
            row.reason = "; ".join(x for x in (row.reason, "top-1 with --label-order sorted") if x)


def reference_of(bundles: Sequence[Path]) -> tuple[Optional[Dict[str, np.ndarray]], Optional[Manifest]]:
    """The first bundle's ``reference.npz`` and manifest (the images every row is timed and judged on)."""
    for b in bundles:
        try:
            m = load_manifest(b)
            path = bundle_file(b, m.reference or REFERENCE_NAME, "reference")
            if path.is_file():
                return load_reference(path, m), m
        except Exception:  # noqa: BLE001 - a broken bundle is reported by its own row
            continue
    return None, None
