"""Stage NSD (neighborhood-aware structural distillation): distil the teacher (features + class anchors) into
the student.

Entry point :func:`fit`; building blocks :func:`build_models`, :func:`build_data`, :func:`build_optim`,
:func:`train_one_epoch`, :func:`evaluate`. Teacher features come through :class:`TeacherSource`
(:class:`LiveTeacher` runs the teacher on every batch).
"""
from pand.models.teacher_source import LiveTeacher, TeacherSource, renormalize

from .criterion import NSDCriterion
from .engine import (
    NonFiniteLossError, NSDResult, build_data, build_models, build_optim, evaluate, fit, train_one_epoch,
)
from .model import NSDModel, NSDOutput

__all__ = [
    "LiveTeacher", "NSDCriterion", "NSDModel", "NSDOutput", "NSDResult", "NonFiniteLossError", "TeacherSource",
    "build_data", "build_models", "build_optim", "evaluate", "fit", "renormalize", "train_one_epoch",
]
