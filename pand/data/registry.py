"""Dataset registry: the ``data.name`` of every supported dataset and the loader that reads its official layout.

This table is the one list of dataset names; the configuration schema (:mod:`pand.config.schema`) takes its
``data.name`` choices from :data:`DATASETS`. Each loader lives in its own module and returns a
:class:`pand.data.layout.RawSplits`; :func:`pand.data.build_splits` looks the loader up here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List

from pand.errors import DataError

from . import aircraft, cars, cub, dogs, dtd, flowers, imagefolder, nabirds, pets, synthetic
from .layout import RawSplits

__all__ = ["DATASETS", "DatasetInfo", "list_datasets", "get_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """A supported dataset: its loader and a one-line description of the expected layout (for messages)."""

    name: str
    loader: Callable[[Path, Any], RawSplits]
    layout: str


_DATASETS: Dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("cub_200_2011", cub.load_cub, cub.LAYOUT),
    DatasetInfo("fgvc_aircraft", aircraft.load_aircraft, aircraft.LAYOUT),
    DatasetInfo("oxford_pets", pets.load_pets, pets.LAYOUT),
    DatasetInfo("stanford_dogs", dogs.load_dogs, dogs.LAYOUT),
    DatasetInfo("stanford_cars", cars.load_cars, cars.LAYOUT),
    DatasetInfo("flowers102", flowers.load_flowers, flowers.LAYOUT),
    DatasetInfo("dtd", dtd.load_dtd, dtd.LAYOUT),
    DatasetInfo("nabirds", nabirds.load_nabirds, nabirds.LAYOUT),
    DatasetInfo("imagefolder", imagefolder.load_imagefolder, imagefolder.LAYOUT),
    DatasetInfo("synthetic", synthetic.load_synthetic, synthetic.LAYOUT),
)}

DATASETS = tuple(_DATASETS)  # the valid values of data.name, in the order error messages list them


def list_datasets() -> List[str]:
    """Names of all supported datasets (sorted)."""
    return sorted(_DATASETS)


def get_dataset(name: str) -> DatasetInfo:
    """The dataset ``name``; :class:`DataError` listing the choices when unknown."""
    if name not in _DATASETS:
        raise DataError(f"unknown dataset '{name}'. Valid choices for data.name: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]
