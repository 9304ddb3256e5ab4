"""Stage NSD's checkpoint contents: the weights of the student and the alignment heads as prefixed tensors.

The checkpoint format itself (per-epoch directories, ``last.json``, resume, the configuration check, RNG states,
the safe loader) is the scaffold's, :mod:`pand.engine.checkpoint`; NSD keeps its checkpoints under
``<run>/nsd/checkpoints/``.
"""
from __future__ import annotations

from typing import Dict

import torch

from pand.engine.checkpoint import split_prefixed

from .model import NSDModel

__all__ = ["model_tensors", "load_model_tensors"]


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
