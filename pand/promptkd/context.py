"""What one PromptKD run works with, handed from stage to stage of :func:`pand.promptkd.recipe.run`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import torch

from pand.data.base import DataSplits
from pand_runtime.preprocess_spec import PreprocessSpec

from .protocol import UnlabeledDataset
from .student import PromptKDStudent

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import RunCfg

__all__ = ["PromptKDContext"]


@dataclass
class PromptKDContext:
    """Everything one PromptKD run works with.

    Attributes:
        cfg: the resolved run configuration.
        out_dir: ``run_dir/promptkd`` (class vectors, PromptSRC prompts, checkpoints, summary).
        device: the training device.
        splits, base, novel: the data and the base-to-novel class ids.
        teacher: the frozen teacher (a :class:`pand.promptkd.promptsrc.PromptedTeacher` for PromptSRC prompts).
        class_vectors: ``T [C, D_t]`` of all classes, on ``device``.
        cv_meta: their metadata (source, artifacts).
        student: the :class:`pand.promptkd.student.PromptKDStudent`, on ``device``.
        pp: the student's eval preprocessing.
        train_ids: the classes in the training logits (:func:`pand.promptkd.protocol.pool_class_ids`).
        pool: the unlabeled distillation pool (set by :func:`pand.promptkd.train.fit`).
        pool_mode: ``promptkd.pool``.
        kd_weight, kd_weight_source: the KD weight and where it came from.
        history: one record per trained epoch.
        progress: tqdm bars.
        life: the run's :class:`pand.engine.lifecycle.RunLifecycle` (set by :func:`pand.promptkd.train.fit`).
    """

    cfg: RunCfg
    out_dir: Path
    device: torch.device
    splits: DataSplits
    base: List[int]
    novel: List[int]
    teacher: Any
    class_vectors: torch.Tensor
    cv_meta: Dict[str, Any]
    student: PromptKDStudent
    pp: PreprocessSpec
    train_ids: List[int]
    pool: Optional[UnlabeledDataset] = None
    pool_mode: str = "reference"
    kd_weight: float = 1000.0
    kd_weight_source: str = ""
    history: List[Dict[str, Any]] = field(default_factory=list)
    progress: bool = True
    life: Any = None
