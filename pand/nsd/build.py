"""Stage NSD's model and optimiser, built from the config: shared by the training loop (:mod:`.engine`) and the
``views=auto`` probe (:mod:`.teacher_cache_auto`), which times a throw-away copy of the same step. Both import this
module; neither imports the other's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Tuple

import torch

from pand.engine.optim import build_optimizer, build_scheduler
from pand.errors import PandError
from pand.models.align import AlignHeads
from pand.models.students import create_student

from .model import NSDModel

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import NSDCfg, RecipeCfg, StudentCfg

__all__ = ["build_models", "build_optim"]


def build_models(student_cfg: StudentCfg, recipe_cfg: RecipeCfg, num_classes: int, teacher_dim: Optional[int],
                 device: torch.device, channels_last: bool = False) -> NSDModel:
    """The student (``student.*``) plus alignment heads ``D_t -> D_s`` when the recipe uses a teacher; in the
    channels-last memory format on CUDA when ``channels_last`` (``trainer.channels_last``).

    Raises:
        ConfigError: unknown student architecture (lists the registered ones); PandError: ImageNet weights that
            cannot be fetched, or a ``student.weights`` file that does not fit (an ArtifactError).
    """
    s, r = student_cfg, recipe_cfg
    student = create_student(str(s.arch), num_classes, pretrained=bool(s.pretrained), weights=s.weights,
                             bn_momentum=s.bn_momentum)
    heads = None
    if r.use_teacher:
        if not teacher_dim:
            raise PandError(f"recipe {r.name} uses a teacher but no teacher features were given")
        if r.distill == "align":  # recipe.distill=logits (kd) teaches the classifier itself: no heads
            heads = AlignHeads(int(teacher_dim), student.embed_dim)
    model = NSDModel(student, heads).to(device)
    if device.type == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_optim(nsd_cfg: NSDCfg, params) -> Tuple[torch.optim.Optimizer, Any]:
    """Optimiser (``nsd.optimizer``) and per-epoch LR scheduler (``nsd.scheduler``, optional linear warm-up), from
    the scaffold's factory (:func:`pand.engine.optim.build_optimizer`, :func:`pand.engine.optim.build_scheduler`)."""
    n = nsd_cfg
    opt = build_optimizer(params, n.optimizer, n.lr, weight_decay=n.weight_decay, momentum=n.momentum,
                          setting="nsd.optimizer")
    sched = build_scheduler(opt, n.scheduler, int(n.epochs), warmup_epochs=int(n.warmup_epochs), eta_min=n.eta_min,
                            step_size=n.step_size, gamma=n.gamma, setting="nsd.scheduler")
    return opt, sched
