"""Datasets in their official layouts, held-out validation, transforms and the synthetic FGVC benchmark.

Entry point: :func:`build_splits` (a ``data`` config section -> :class:`DataSplits`). Loaders live one per
dataset (``cub``, ``aircraft``, ``pets``, ``dogs``, ``cars``, ``flowers``, ``dtd``, ``nabirds``,
``imagefolder``, ``synthetic``) and register themselves in :mod:`pand.data.registry`. Importing this package
does not import torch; transforms and torchvision-backed loaders import it when used.
"""
from .base import DataSplits, FGVCDataset, Sample
from .factory import build_splits, load_raw
from .registry import RawSplits, clean_class_name, get_dataset, list_datasets, register_dataset
from .splits import base_novel_split, label_budget, stratified_holdout
from .transforms import (
    CropFlipParams,
    PreprocessCfg,
    RandomResizedCropFlip,
    create_transform,
    preprocess_cfg_from_student,
)

__all__ = [
    "DataSplits", "FGVCDataset", "Sample", "build_splits", "load_raw", "RawSplits", "clean_class_name",
    "get_dataset", "list_datasets", "register_dataset", "base_novel_split", "label_budget", "stratified_holdout",
    "CropFlipParams", "PreprocessCfg", "RandomResizedCropFlip", "create_transform", "preprocess_cfg_from_student",
    "generate_synthetic",
]


def __getattr__(name: str):
    # lazy, so that `python -m pand.data.synthetic` does not find its module imported twice (runpy warning)
    if name == "generate_synthetic":
        from .synthetic import generate_synthetic

        return generate_synthetic
    raise AttributeError(f"module 'pand.data' has no attribute {name!r}")
