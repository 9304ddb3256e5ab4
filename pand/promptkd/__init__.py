"""PromptKD (CVPR 2024): unsupervised prompt distillation into a smaller prompted CLIP image encoder.

Public API:

* :func:`run` ``(cfg, run_dir, resume=False) -> dict`` - the whole recipe (``recipe.name=promptkd``).
* :func:`build_promptkd_classifier` ``(pk_cfg, teacher_cfg, num_classes, embed_dim=None) -> PromptKDClassifier`` -
  the deployable graph's skeleton for ``load_state_dict`` (exporters); :func:`load_promptkd_classifier`
  ``(path)`` rebuilds it from a ``student.safetensors`` alone.
* :class:`PromptedVisionEncoder`, :class:`PromptKDStudent`, :class:`PromptKDClassifier` - the student modules.
* :func:`promptkd_kd_loss`, :func:`promptkd_logits` - the pure loss math; :func:`promptsrc_losses`,
  :func:`gpa_weights` - the PromptSRC teacher's (:mod:`pand.promptkd.promptsrc`).
* :func:`run_promptkd_grid` - the recipe over several pools and teachers (teacher trained once per kind), with
  one base/novel/HM row per run (:mod:`pand.promptkd.grid`; what the demo reports).
* :func:`promptkd_gflops` - teacher vs student inference cost.
"""
from .flops import promptkd_gflops
from .loss import promptkd_kd_loss, promptkd_logits
from .grid import run_promptkd_grid
from .promptsrc import PromptedTeacher, PromptSRCModel, gpa_weights, promptsrc_losses
from .protocol import (
    POOLS, build_pool, harmonic_mean, promptkd_lr, resolve_base_novel, resolve_kd_weight, resolve_pool, subset_accuracy,
)
from .recipe import run
from .student import (
    PromptedVisionEncoder,
    PromptKDClassifier,
    PromptKDStudent,
    build_promptkd_classifier,
    build_promptkd_student,
    load_promptkd_classifier,
    make_projector,
)
from .summary import POOL_NOTES, TRANSDUCTIVE_NOTE

__all__ = [
    "run", "build_promptkd_classifier", "load_promptkd_classifier", "build_promptkd_student",
    "PromptedVisionEncoder", "PromptKDStudent", "PromptKDClassifier", "make_projector", "promptkd_kd_loss",
    "promptkd_logits", "promptkd_gflops", "build_pool", "harmonic_mean", "promptkd_lr", "resolve_base_novel",
    "subset_accuracy", "TRANSDUCTIVE_NOTE", "POOL_NOTES", "POOLS", "resolve_pool", "resolve_kd_weight",
    "run_promptkd_grid", "PromptSRCModel", "PromptedTeacher", "promptsrc_losses", "gpa_weights",
]
