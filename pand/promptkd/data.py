"""PromptKD's data: the run's splits and base/novel classes, the base-only view its teachers are prompt-tuned on,
the loader of the unlabeled distillation pool, and the data sections of the cross-dataset evaluations.

* :func:`build_data`: ``build_splits`` + the base-to-novel split (:func:`pand.promptkd.protocol.resolve_base_novel`).
* :func:`base_only_splits`: the splits restricted to the base classes, labels relabelled ``0..m-1`` (what Stage PSC
  and the PromptSRC teacher train on: no novel-class image or label).
* :func:`distillation_loader`: the ``promptkd.pool`` images (:func:`pand.promptkd.protocol.build_pool`) with the
  student's training augmentation, in the seeded, per-sample replayable training loader of the scaffold's stages
  (:func:`pand.engine.loaders.make_train_loader`).
* :func:`cross_eval_data`: the ``data`` section of a ``promptkd.cross_eval`` entry.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from pand.config import ConfigError
from pand.config.loader import config_dir, list_group
from pand.config.schema import DataCfg
from pand.data import build_splits
from pand.data.base import DataSplits, FGVCDataset
from pand.data.transforms import create_transform
from pand.engine.loaders import make_train_loader
from pand.errors import DataError
from pand.utils.distributed import DistInfo
from pand_runtime.preprocess_spec import PreprocessSpec

from .protocol import UnlabeledDataset, build_pool, resolve_base_novel

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PromptKDCfg, TrainerCfg

__all__ = ["build_data", "base_only_splits", "distillation_loader", "cross_eval_data"]


def build_data(data_cfg: DataCfg, cache_dir: str) -> Tuple[DataSplits, List[int], List[int]]:
    """``(splits, base, novel)`` of the run's ``data`` section (generated/cached data under ``cache_dir``).

    Raises:
        DataError: an empty base or novel side.
    """
    splits = build_splits(data_cfg, cache_dir=cache_dir)
    base, novel = resolve_base_novel(splits)
    return splits, base, novel


def base_only_splits(splits: DataSplits, base_classes: Sequence[int]) -> DataSplits:
    """A :class:`pand.data.DataSplits` restricted to the base classes, labels relabelled ``0..m-1``.

    A teacher prompt-tuned on it (Stage PSC, PromptSRC) never sees a novel-class image or label (train, val and test
    are all restricted).
    """
    remap = {int(c): i for i, c in enumerate(base_classes)}
    names = [splits.class_names[c] for c in base_classes]

    def restrict(ds: Optional[FGVCDataset]) -> Optional[FGVCDataset]:
        if ds is None:
            return None
        samples = [(p, remap[y]) for p, y in ds.samples if y in remap]
        return FGVCDataset(samples, names, transform=ds.transform, skip_corrupt=ds.skip_corrupt,
                           name=f"{ds.name}[base]")

    return DataSplits(
        train=restrict(splits.train), val=restrict(splits.val), test=restrict(splits.test), class_names=names,
        root=splits.root, template=splits.template, base_classes=None, novel_classes=None,
        captions=splits.captions,
    )


def distillation_loader(pk_cfg: PromptKDCfg, trainer_cfg: TrainerCfg, splits: DataSplits, pool: str,
                        base: Sequence[int], pp: PreprocessSpec, device_type: str
                        ) -> Tuple[UnlabeledDataset, DataLoader]:
    """The unlabeled pool ``pool`` and its training loader.

    The images get the student's training augmentation (``create_transform(pp, True, "standard")`` with
    ``promptkd.train_crop_scale``: RandomResizedCrop + flip); the loader draws batches of ``promptkd.batch_size``
    seeded with ``trainer.seed`` and yields ``(images, -1 labels, indices)``.

    Raises:
        DataError: a pool of fewer than 2 images.
    """
    transform = create_transform(pp, True, "standard", crop_scale=tuple(pk_cfg.train_crop_scale))
    dataset, _ = build_pool(splits, pool, base, transform=transform)
    if len(dataset) < 2:
        raise DataError(f"the {pool} distillation pool has {len(dataset)} image(s); PromptKD needs at least 2")
    loader = make_train_loader(dataset, int(pk_cfg.batch_size), int(trainer_cfg.seed), DistInfo(), trainer_cfg,
                               device_type)
    return dataset, loader


def cross_eval_data(name: str) -> Any:
    """The ``data`` section of a ``promptkd.cross_eval`` entry: ``configs/data/<name>.yaml`` or a YAML file path,
    merged onto the schema's defaults.

    Raises:
        ConfigError: neither a data config name nor a YAML file.
    """
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = config_dir() / "data" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"promptkd.cross_eval: unknown data config '{name}'. Valid choices: "
                          f"{', '.join(list_group('data'))}, or a path to a data YAML file")
    return OmegaConf.merge(OmegaConf.structured(DataCfg), OmegaConf.load(path))
