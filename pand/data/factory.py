"""``build_splits``: the one entry point from a ``data`` config section to train / val / test datasets.

The section is a :class:`pand.config.schema.DataCfg` (or the OmegaConf node of one, as :func:`pand.config.load_config`
returns it); its fields are read as attributes, so every default is the schema's.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from pand.errors import DataError

from .base import UNLABELED, DataSplits, FGVCDataset, Sample, unreadable_images
from .imagefolder import IMG_EXTENSIONS
from .split_checks import check_disjoint_splits, check_final_splits
from .layout import RawSplits
from .registry import get_dataset
from .splits import base_novel_split, label_budget, stratified_holdout
from .synthetic import ensure_synthetic

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

__all__ = ["build_splits", "check_data_source", "load_raw", "unlabeled_samples"]

_MAX_LISTED = 5


def load_raw(data_cfg: DataCfg, cache_dir: str | os.PathLike = ".cache/pand") -> RawSplits:
    """Read the official splits of ``data_cfg.name`` (generating the synthetic benchmark when ``root`` is null).

    Raises:
        DataError: unknown dataset (lists the choices), ``root`` not set, or the loader's own errors.
    """
    name = str(data_cfg.name)
    info = get_dataset(name)
    root = data_cfg.root
    if root in (None, ""):
        if name != "synthetic":
            raise DataError(
                f"{name}: data.root is not set. Point it at the dataset folder, e.g. data.root=/data/{name}. "
                f"Expected layout: {info.layout}"
            )
        root_path = ensure_synthetic(cache_dir, data_cfg.synthetic)
    else:
        root_path = Path(os.path.abspath(os.path.expanduser(str(root))))
        if not root_path.is_dir():
            raise DataError(f"{name}: data.root {root_path} does not exist or is not a folder. Point data.root at "
                            f"the dataset folder (data.root=/path/to/{name}). Expected layout: {info.layout}")
    return info.loader(root_path, data_cfg)


def _check_template(template: str, name: str) -> None:
    if "{}" not in template:
        raise DataError(f"{name}: data.template={template!r} has no '{{}}' where the class name goes")


def check_data_source(data_cfg: "DataCfg", cache_dir: str | os.PathLike = ".cache/pand") -> None:
    """The cheap checks of :func:`build_splits` that can fail, run before a run writes anything (``pand-train``
    creates no run folder for a dataset it cannot read).

    Checks: the dataset name, ``data.root`` (set, a folder) and the dataset's layout under it (its loader reads the
    split files or lists the folders: no image is opened), ``data.unlabeled`` (``rest`` needs a label budget, a
    folder must exist) and ``data.template``. The synthetic benchmark with ``data.root`` null is not generated here
    (:func:`build_splits` generates it into ``cache_dir``).

    Raises:
        DataError: naming the bad key, the path and the fix (the same messages :func:`build_splits` gives).
    """
    name = str(data_cfg.name)
    get_dataset(name)
    if not (data_cfg.root in (None, "") and name == "synthetic"):
        load_raw(data_cfg, cache_dir)
    unlabeled_samples(data_cfg.unlabeled, [], name, data_cfg.labels_per_class)
    _check_template(str(data_cfg.template), name)


def _check_names(names: Sequence[str], name: str, what: str) -> None:
    seen: Dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise DataError(
                f"{name}: duplicate class name {n!r} (labels {seen[n]} and {i}) in {what}. Text anchors need one name "
                f"per class; give distinct names with data.class_names=[...]"
            )
        seen[n] = i


def _check_samples(samples: List[Sample], n_classes: int, name: str, split: str, source: str) -> None:
    missing = [p for p, _ in samples if not os.path.isfile(p)]
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED])
        raise DataError(
            f"{name}: {len(missing)} of {len(samples)} {split} images listed in {source or split} are missing "
            f"(e.g. {listed}). Re-extract the dataset under data.root or fix the split file."
        )
    bad = [(p, y) for p, y in samples if not 0 <= y < n_classes]
    if bad:
        raise DataError(f"{name}: {split} image {bad[0][0]} has label {bad[0][1]} outside 0..{n_classes - 1}")


def _check_nonempty(samples: List[Sample], names: Sequence[str], name: str, split: str) -> None:
    if not samples:
        raise DataError(f"{name}: the {split} split is empty")
    present = {y for _, y in samples}
    empty = [i for i in range(len(names)) if i not in present]
    if empty:
        shown = ", ".join(f"{i} ({names[i]})" for i in empty[:_MAX_LISTED])
        raise DataError(
            f"{name}: {len(empty)} class(es) have no {split} images: {shown}. Every class needs training images; "
            f"remove the empty classes from the metadata or add images."
        )


def _drop_unreadable(samples: Optional[List[Sample]], name: str, split: str, skipped: Dict[str, List[str]]
                     ) -> Optional[List[Sample]]:
    """``samples`` without the files that cannot be decoded (``data.skip_corrupt=true``), recorded in ``skipped``."""
    if not samples:
        return samples
    bad = unreadable_images([p for p, _ in samples])
    if not bad:
        return samples
    skipped[split] = sorted(bad)
    shown = "; ".join(f"{p} ({r})" for p, r in sorted(bad.items())[:_MAX_LISTED])
    warnings.warn(f"{name}/{split}: dropped {len(bad)} of {len(samples)} unreadable image(s) "
                  f"(data.skip_corrupt=true): {shown}")
    return [(p, y) for p, y in samples if p not in bad]


def unlabeled_samples(spec: Optional[str], rest: List[Sample], name: str, budget: Optional[int]) -> List[Sample]:
    """The transfer set's extra images (``data.unlabeled``), each with label :data:`UNLABELED`.

    Args:
        spec: null (none), ``"rest"`` (the training images the label budget ``data.labels_per_class`` left out,
            ``rest``) or a folder searched recursively for image files (sorted; symlinked folders not entered).
        rest: the training samples outside the label budget.
        name: dataset name, for messages.
        budget: ``data.labels_per_class``.

    Raises:
        DataError: ``rest`` without a label budget, a missing or image-less folder.
    """
    if spec in (None, ""):
        return []
    if str(spec) == "rest":
        if budget is None:
            raise DataError(f"{name}: data.unlabeled=rest uses the training images beyond data.labels_per_class, but no "
                            f"label budget is set. Set data.labels_per_class=N, or point data.unlabeled at a folder.")
        return [(p, UNLABELED) for p, _ in rest]
    folder = Path(os.path.abspath(os.path.expanduser(str(spec))))
    if not folder.is_dir():
        raise DataError(f"{name}: data.unlabeled={spec}: no such folder. Give a folder of images (searched "
                        f"recursively), 'rest' (the training images beyond data.labels_per_class) or null.")
    files = [os.path.join(d, f) for d, _, fs in sorted(os.walk(folder)) for f in sorted(fs)
             if f.lower().endswith(IMG_EXTENSIONS)]
    if not files:
        raise DataError(f"{name}: data.unlabeled={folder} holds no image files ({', '.join(IMG_EXTENSIONS)})")
    return [(p, UNLABELED) for p in files]


def build_splits(
    data_cfg: DataCfg,
    cache_dir: str | os.PathLike = ".cache/pand",
    train_transform: Optional[Callable] = None,
    eval_transform: Optional[Callable] = None,
) -> DataSplits:
    """Build the train / val / test datasets of a run.

    Steps: read the official layout (:func:`load_raw`); check class names (``data.class_names`` overrides them),
    that every listed image exists and every class has training images; take the official val split where the
    dataset has one (FGVC-Aircraft, DTD, Flowers-102 with ``flowers_use_val``, an ImageFolder ``val/``), else hold
    out ``data.val_fraction`` of every class of train (seeded by ``data.val_seed``); then apply the label budget
    ``data.labels_per_class`` to train, and collect the unlabelled transfer set ``data.unlabeled``
    (:func:`unlabeled_samples`; never an image of val or test). The test split is never changed, except that ``data.skip_corrupt=true``
    decodes every image once first and drops the unreadable ones from every split (a warning names them; they are
    listed in ``DataSplits.skipped`` and counted in each dataset's ``skipped``), so training, evaluation and export
    see the same readable images and no image stands in for another.

    Args:
        data_cfg: the ``data`` config section (:class:`pand.config.schema.DataCfg` or its OmegaConf node).
        cache_dir: where the synthetic benchmark is generated when ``data.root`` is null.
        train_transform: applied to train images (PIL RGB -> whatever the model wants).
        eval_transform: applied to val and test images.

    Returns:
        :class:`DataSplits` with ``base_classes`` / ``novel_classes`` (first ``ceil(C/2)`` ids are base) and, for
        the synthetic benchmark, ``captions`` (absolute image path -> caption).

    Raises:
        DataError: with the bad input and the fix (missing root or files, unknown dataset, empty classes, ...).
    """
    name = str(data_cfg.name)
    raw = load_raw(data_cfg, cache_dir)
    names = list(raw.class_names)
    _check_names(names, name, "the dataset files")
    override = data_cfg.class_names
    if override is not None:
        override = [str(n) for n in override]
        if len(override) != len(names):
            raise DataError(f"{name}: data.class_names has {len(override)} names but the dataset has {len(names)} "
                            f"classes; give one name per class in label order")
        _check_names(override, name, "data.class_names")
        names = override
    c = len(names)
    for split, samples in (("train", raw.train), ("val", raw.val), ("test", raw.test)):
        if samples is not None:
            _check_samples(samples, c, name, split, raw.sources.get(split, ""))
    skip = bool(data_cfg.skip_corrupt)
    skipped: Dict[str, List[str]] = {}
    raw_train, raw_val, raw_test = raw.train, raw.val, raw.test
    if skip:
        raw_train = _drop_unreadable(raw_train, name, "train", skipped)
        raw_val = _drop_unreadable(raw_val, name, "val", skipped)
        raw_test = _drop_unreadable(raw_test, name, "test", skipped)
    _check_nonempty(raw_train, names, name, "train")
    if not raw_test:
        raise DataError(f"{name}: the test split ({raw.sources.get('test', 'test')}) is empty"
                        + (" after dropping its unreadable images" if skipped.get("test") else ""))

    train = list(raw_train)
    if raw_val is not None:
        val: Optional[List[Sample]] = list(raw_val)
    else:
        fraction = float(data_cfg.val_fraction)
        if not 0 <= fraction < 1:
            raise DataError(f"{name}: data.val_fraction={fraction} must be in [0, 1)")
        tr_idx, va_idx = stratified_holdout([y for _, y in train], fraction, int(data_cfg.val_seed))
        val = [train[i] for i in va_idx] if va_idx else None
        train = [train[i] for i in tr_idx]
    budget = data_cfg.labels_per_class
    rest: List[Sample] = []
    if budget is not None:
        if int(budget) < 1:
            raise DataError(f"{name}: data.labels_per_class={budget} must be >= 1 (or null for all)")
        keep = label_budget([y for _, y in train], int(budget), int(data_cfg.val_seed))
        kept = set(keep)
        rest = [train[i] for i in range(len(train)) if i not in kept]
        train = [train[i] for i in keep]
    extra = unlabeled_samples(data_cfg.unlabeled, rest, name, budget)
    if skip:
        extra = _drop_unreadable(extra, name, "unlabeled", skipped) or []
    # disjoint by file and content (not path); val/test classes without images are reported. The transfer set
    # (data.unlabeled) must not hold an evaluation image either (it may repeat a labelled training image).
    check_final_splits(name, names, {"train": train, "val": val, "test": raw_test})
    if extra:
        check_disjoint_splits(name, {"unlabeled": extra, "val": val, "test": raw_test})

    def ds(samples: Optional[List[Sample]], split: str, tf: Optional[Callable]) -> Optional[FGVCDataset]:
        if samples is None:
            return None
        out = FGVCDataset(samples, names, transform=tf, skip_corrupt=skip, name=f"{name}/{split}")
        # a held-out val split's dropped files were counted with train (they were dropped before the holdout)
        out.skipped = len(skipped.get(split, []))
        return out

    template = str(data_cfg.template)
    _check_template(template, name)
    base, novel = base_novel_split(range(c))
    return DataSplits(
        train=ds(train, "train", train_transform), val=ds(val, "val", eval_transform),
        test=ds(list(raw_test), "test", eval_transform), class_names=names, root=raw.root,
        template=template, base_classes=base, novel_classes=novel,
        captions=raw.captions, skipped=skipped,
        unlabeled=FGVCDataset(extra, names, transform=train_transform, skip_corrupt=skip, name=f"{name}/unlabeled")
        if extra else None,
    )
