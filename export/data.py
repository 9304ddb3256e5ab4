"""Images for the parity check (the run's TEST split) and for INT8 calibration (the run's TRAINING split).

Both go through the training eval transform built from the student's spec
(``pand.data.transforms.create_transform(spec, is_train=False)``). Calibration never reads the test split; parity
never reads the training split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence

import numpy as np

from pand.config.schema import RunCfg
from pand.data import build_splits
from pand.errors import DataError, PandError

__all__ = ["SplitImages", "FolderImages", "RandomImages", "load_split_images", "load_folder_images", "select_indices",
           "iter_batches"]


def select_indices(n_total: int, n: int, seed: int) -> List[int]:
    """``n`` distinct indices of ``range(n_total)`` in a seeded random order (``n <= 0`` or ``n >= n_total``: all,
    in order). Random order mixes the classes when a dataset is stored class by class."""
    if n <= 0 or n >= n_total:
        return list(range(n_total))
    return [int(i) for i in np.random.default_rng(seed).permutation(n_total)[:n]]


@dataclass
class SplitImages:
    """A seeded selection of labelled images of one split: ``image(i)`` is a PIL RGB image, ``labels[i]`` its class."""

    dataset: Any  # pand.data.base.FGVCDataset
    indices: List[int]
    split: str

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([self.dataset.samples[i][1] for i in self.indices], dtype=np.int64)

    @property
    def paths(self) -> List[str]:
        return [str(self.dataset.samples[i][0]) for i in self.indices]

    def image(self, k: int):
        return self.dataset.load_image(self.indices[k])


@dataclass
class FolderImages:
    """Unlabelled images of a folder (``pand-export --calib-images DIR``), read as RGB: ``image(i)``, ``paths``."""

    files: List[Any]
    split: str = "folder"

    def __len__(self) -> int:
        return len(self.files)

    @property
    def paths(self) -> List[str]:
        return [str(p) for p in self.files]

    def image(self, k: int):
        from pand.data.base import read_rgb

        try:
            return read_rgb(self.files[k])
        except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
            raise DataError(f"cannot read calibration image {self.files[k]} ({type(e).__name__}: {e}); fix or remove "
                            f"it") from e


@dataclass
class RandomImages:
    """``n`` seeded random RGB images of ``size`` x ``size`` (uint8, already at the model's input size): the parity
    inputs of an fp32/fp16 export when the run's dataset is not available. No labels (``labels`` is empty)."""

    n: int
    size: int
    seed: int = 0
    split: str = "random"

    def __len__(self) -> int:
        return self.n

    @property
    def labels(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    @property
    def paths(self) -> List[str]:
        return []

    def image(self, k: int):
        from PIL import Image

        rng = np.random.default_rng([self.seed, k])
        return Image.fromarray(rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8), "RGB")


def load_folder_images(root: Any, n: int, seed: int) -> FolderImages:
    """A seeded selection of ``n`` image files under folder ``root`` (searched recursively; ``n <= 0``: all).

    Raises:
        DataError: the folder holds no image file.
    """
    from pathlib import Path

    from pand_runtime.bench_accuracy import IMAGE_EXTENSIONS

    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"--calib-images {root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in that folder or "
                        f"below it")
    return FolderImages([files[i] for i in select_indices(len(files), n, seed)])


def load_split_images(cfg: Optional[RunCfg], split: str, n: int, seed: int, class_names: Sequence[str]) -> SplitImages:
    """A seeded selection of ``n`` images of the run's ``split`` (``train`` or ``test``; ``n <= 0``: all).

    Raises:
        PandError: no config, an empty split, or dataset classes that differ from the checkpoint's.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    if cfg is None:
        raise PandError("the parity check on test images and INT8 calibration need the run's dataset: export a run "
                        "directory (or a checkpoint with config.yaml next to it)")
    splits = build_splits(cfg.data, cache_dir=cfg.cache_dir, train_transform=None, eval_transform=None)
    ds = getattr(splits, split)
    if ds is None or len(ds) == 0:
        raise DataError(f"the run's {split} split is empty ({cfg.data.name}, root={cfg.data.root}); point "
                        f"--data-root at the dataset")
    if list(splits.class_names) != list(class_names):
        raise DataError(f"the dataset's classes ({len(splits.class_names)}: {list(splits.class_names)[:3]}...) differ "
                        f"from the checkpoint's ({len(class_names)}: {list(class_names)[:3]}...); labels would not "
                        f"match. Export with the run's own config.yaml")
    return SplitImages(dataset=ds, indices=select_indices(len(ds), n, seed), split=split)


def iter_batches(images: SplitImages, transform: Callable, batch_size: int, desc: str = "") -> Iterator[Any]:
    """Yield ``(k0, stacked float tensors [B, 3, S, S])`` over ``images`` through ``transform`` with a progress bar."""
    import torch
    from tqdm import tqdm

    for k0 in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=not desc):
        ks = range(k0, min(k0 + batch_size, len(images)))
        yield k0, torch.stack([transform(images.image(k)) for k in ks])
