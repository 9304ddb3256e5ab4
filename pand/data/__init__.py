"""Datasets in their official layouts, held-out validation, transforms and the synthetic FGVC benchmark.

Entry point: :func:`build_splits` (a ``data`` config section -> :class:`DataSplits`). Loaders live one per
dataset (``cub``, ``aircraft``, ``pets``, ``dogs``, ``cars``, ``flowers``, ``dtd``, ``nabirds``,
``imagefolder``, and the ``synthetic`` package) and share :mod:`pand.data.layout`; :mod:`pand.data.registry` maps
each ``data.name`` to its loader. Importing this package does not import torch; transforms and torchvision-backed
loaders import it when used.
"""
from .base import DataSplits, FGVCDataset, Sample
from .factory import build_splits, check_data_source, load_raw
from .layout import RawSplits, clean_class_name
from .registry import DATASETS, get_dataset, list_datasets
from .splits import base_novel_split, label_budget, stratified_holdout
from .synthetic import generate_synthetic
from .transforms import (
    CropFlipParams,
    RandomResizedCropFlip,
    create_transform,
    preprocess_spec_from_student,
)

__all__ = [
    "DataSplits", "FGVCDataset", "Sample", "build_splits", "check_data_source", "load_raw", "RawSplits", "clean_class_name",
    "DATASETS", "get_dataset", "list_datasets", "base_novel_split", "label_budget", "stratified_holdout",
    "CropFlipParams", "RandomResizedCropFlip", "create_transform", "preprocess_spec_from_student",
    "generate_synthetic",
]

