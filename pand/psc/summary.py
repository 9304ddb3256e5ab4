"""What Stage PSC writes next to its anchors: the artifact's metadata and ``summary.json``."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

import torch

from pand.models.teacher import teacher_summary
from pand.utils.io import atomic_write_json

from .loop import PSCResult
from .settings import psc_settings

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PSCCfg

__all__ = ["SPLITS", "artifact_meta", "write_summary"]

SPLITS = ("train", "val", "test")
Features = Optional[Tuple[torch.Tensor, torch.Tensor]]  # (features [N, D], labels [N]) of a split, None if empty


def artifact_meta(psc_cfg: PSCCfg, teacher: Any, class_names: List[str], prompts: List[str], template: str,
                  context_length: int, coop: Mapping[str, Optional[float]], zero_shot: Mapping[str, Optional[float]],
                  res: PSCResult, config_hash: str) -> Dict[str, Any]:
    """The metadata stored in ``learned_text_features.safetensors`` (format ``pand-psc-v1``; see
    :mod:`pand.psc.anchors`): classes, prompts, prompt settings, teacher, accuracies of the kept context and of the
    hand-crafted template on val/test, the kept epoch and the config hash."""
    return {
        "format": "pand-psc-v1",
        "class_names": class_names,
        "prompts": prompts,
        "n_ctx": int(psc_cfg.n_ctx),
        "ctx_init": psc_cfg.ctx_init,
        "csc": bool(psc_cfg.csc),
        "prompt_form": str(psc_cfg.prompt_form),
        "class_token_position": str(psc_cfg.class_token_position),
        "template": template,
        "teacher_identity": teacher.identity,
        "embed_dim": int(teacher.embed_dim),
        "context_length": int(context_length),
        "logit_scale": teacher.logit_scale,
        "val_acc": coop["val"], "test_acc": coop["test"],
        "zero_shot_val_acc": zero_shot["val"], "zero_shot_test_acc": zero_shot["test"],
        "best_epoch": res.best_epoch, "selection": res.selection,
        "config_hash": config_hash,
    }


def write_summary(path: Path, psc_cfg: PSCCfg, artifact: Path, teacher: Any, num_classes: int,
                  features: Mapping[str, Features], coop: Mapping[str, Optional[float]],
                  zero_shot: Mapping[str, Optional[float]], res: PSCResult, config_hash: str,
                  seconds: Mapping[str, float]) -> None:
    """Write ``summary.json`` atomically: artifact path, teacher, per-split image counts and accuracies (CoOp and
    zero-shot), the selection, the PSC settings, the config hash and the timings."""
    atomic_write_json(path, {
        "artifact": str(artifact),
        "teacher": teacher_summary(teacher),
        "num_classes": num_classes,
        "counts": {s: (int(features[s][0].shape[0]) if features[s] is not None else 0) for s in SPLITS},
        "coop": dict(coop),
        "zero_shot": dict(zero_shot),
        "best_epoch": res.best_epoch,
        "best_val_acc": res.best_val_acc,
        "epochs_run": res.epochs_run,
        "selection": res.selection,
        "settings": psc_settings(psc_cfg),
        "config_hash": config_hash,
        "seconds": dict(seconds),
    })
