"""What a PromptKD run reports: the pool notes, the inference cost and ``summary.json``.

The summary (written to ``run_dir/promptkd/summary.json`` and ``run_dir/summary.json``) records the pool and what
it held (test images and novel-class images counted, labels never used), the KD weight and its source, teacher and
student base / novel / HM / all accuracy side by side, the model selection (never on test), the class vectors'
provenance, the cross-dataset results, the GFLOPs, the per-epoch history and the artifacts. A transductive pool is
flagged in capitals (:data:`TRANSDUCTIVE_NOTE`).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict

from .context import PromptKDContext
from .flops import promptkd_gflops
from .student import PromptKDClassifier

__all__ = ["TRANSDUCTIVE_NOTE", "REFERENCE_NOTE", "INDUCTIVE_NOTE", "POOL_NOTES", "cost_report", "build_summary"]

TRANSDUCTIVE_NOTE = (
    "TRANSDUCTIVE: THE UNLABELED DISTILLATION POOL INCLUDED THE TEST IMAGES (AND NOVEL-CLASS TRAINING IMAGES). "
    "RESULTS ARE NOT COMPARABLE WITH THE REFERENCE OR INDUCTIVE POOLS."
)
REFERENCE_NOTE = ("reference: the unlabeled pool held the training images of all classes, base and novel (labels "
                  "unused, no test image), as the reference code")
INDUCTIVE_NOTE = "inductive: the unlabeled pool held only training images of the base classes (no test image)"
POOL_NOTES = {"reference": REFERENCE_NOTE, "inductive": INDUCTIVE_NOTE, "transductive": TRANSDUCTIVE_NOTE}
# the class-vector metadata the summary repeats
_CLASS_VECTOR_KEYS = ("source", "teacher_identity", "psc_artifact", "psc_trained_on", "psc_context",
                      "promptsrc_artifact", "promptsrc_trained_on", "promptsrc_prompts_sha", "promptsrc_settings",
                      "promptsrc_final_losses")


def cost_report(ctx: PromptKDContext) -> Dict[str, Any]:
    """Teacher vs student GFLOPs (:func:`pand.promptkd.flops.promptkd_gflops`), or ``{"error": ...}`` with a
    warning: a cost report must not fail a finished run."""
    try:
        return promptkd_gflops(str(ctx.cfg.teacher.arch), ctx.cfg.teacher.image_size,
                               PromptKDClassifier(ctx.student, ctx.class_vectors.cpu()), ctx.pp.image_size)
    except Exception as e:  # noqa: BLE001 - a cost report must not fail a finished run
        warnings.warn(f"GFLOPs not counted: {type(e).__name__}: {e}")
        return {"error": f"{type(e).__name__}: {e}"}


def build_summary(ctx: PromptKDContext, teacher: Dict, student: Dict, selection: Dict, cross: Dict, gflops: Dict,
                  artifacts: Dict[str, str], seconds: float) -> Dict[str, Any]:
    """The run's summary dict (see the module docstring)."""
    pool = ctx.pool_mode
    parts = ctx.pool.parts if ctx.pool is not None else []
    test_paths = {p for p, _ in ctx.splits.test.samples} if ctx.splits.test is not None else set()
    pool_samples = [(p, y) for part in parts for p, y in part.samples]
    novel = set(ctx.novel)
    return {
        "recipe": "promptkd",
        "pool_mode": pool,
        "regime": pool,  # old name of pool_mode
        "protocol": POOL_NOTES[pool],
        "dataset": str(ctx.cfg.data.name),
        "classes": {"total": len(ctx.splits.class_names), "base": len(ctx.base), "novel": len(ctx.novel),
                    "in_training_logits": len(ctx.train_ids)},
        "pool": {"mode": pool, "transductive": pool == "transductive", "images": len(pool_samples),
                 "test_images": sum(p in test_paths for p, _ in pool_samples),
                 "novel_class_images": sum(y in novel for _, y in pool_samples), "labels_used": False},
        "kd_weight": {"value": ctx.kd_weight, "source": ctx.kd_weight_source},
        "teacher_prompts": str(ctx.cv_meta.get("source")),
        "results": {"teacher": teacher, "student": student},
        "side_by_side": {k: {"teacher": teacher[k], "student": student[k]} for k in ("base", "novel", "hm", "all")},
        "selection": {**selection, "uses_test": False},
        "class_vectors": {k: ctx.cv_meta.get(k) for k in _CLASS_VECTOR_KEYS if k in ctx.cv_meta},
        "cross_eval": cross,
        "gflops": gflops,
        "teacher_step": ("live teacher image forward (with its PromptSRC vision prompts)" if
                         ctx.cv_meta.get("source") == "promptsrc" else "live frozen teacher image forward")
        + " on the student's augmented view every step; text side never",
        "history": ctx.history,
        "artifacts": artifacts,
        "seconds": seconds,
    }
