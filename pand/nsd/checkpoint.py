"""Stage NSD's checkpoint contents: the weights of the student and the alignment heads as prefixed tensors.

The checkpoint format itself (per-epoch directories, ``last.json``, resume, the configuration check, RNG states,
the safe loader) is the scaffold's, :mod:`pand.engine.checkpoint`; NSD keeps its checkpoints under
``<run>/nsd/checkpoints/``. The scaffold's names are re-exported here for the callers that still import them from
this module (``pand.train``, ``pand.promptkd``); new code imports :mod:`pand.engine.checkpoint`.
"""
from __future__ import annotations

from typing import Dict

import torch

from pand.engine.checkpoint import (  # noqa: F401 - re-exported (see the module docstring)
    RESUME_IGNORED_KEYS, best_weights_path, capture_rng, check_resume_config, checkpoint_config, config_diff,
    flatten_config, has_checkpoint, load_last_checkpoint, refuse_overwrite, restore_rng, save_checkpoint,
    split_prefixed,
)

from .model import NSDModel

__all__ = [
    "model_tensors", "load_model_tensors",
    "RESUME_IGNORED_KEYS", "capture_rng", "restore_rng", "save_checkpoint", "load_last_checkpoint", "has_checkpoint",
    "best_weights_path", "refuse_overwrite", "checkpoint_config", "flatten_config", "config_diff",
    "check_resume_config", "split_prefixed",
]


def model_tensors(model: NSDModel) -> Dict[str, torch.Tensor]:
    """The weights of ``model`` to checkpoint: ``student.<key>`` and, when it has alignment heads, ``heads.<key>``."""
    out = {f"student.{k}": v for k, v in model.student.state_dict().items()}
    if model.heads is not None:
        out.update({f"heads.{k}": v for k, v in model.heads.state_dict().items()})
    return out


def load_model_tensors(model: NSDModel, tensors: Dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`model_tensors` (strict: every key of the student and heads must be present)."""
    model.student.load_state_dict(split_prefixed(tensors, "student"))
    if model.heads is not None:
        model.heads.load_state_dict(split_prefixed(tensors, "heads"))
