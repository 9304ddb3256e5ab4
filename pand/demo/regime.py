"""The demo's regime gate: does the teacher know more than the student can learn from its labels?

Distillation can only teach what the teacher knows and the labels do not. The gate is decided from **validation**
numbers only (it is printed before any test number):

    met  <=>  teacher_val_top1 >= min_teacher  and  teacher_val_top1 - ce_val_top1 >= min_gap

with the teacher's hand-crafted-prompt zero-shot top-1 and the CE-only student's top-1 on the validation split
(defaults 60% and 20 points).
"""
from __future__ import annotations

from typing import Dict

__all__ = ["MIN_TEACHER_VAL", "MIN_GAP", "regime_gate", "regime_sentence"]

MIN_TEACHER_VAL = 0.60
MIN_GAP = 0.20


def regime_gate(teacher_val_top1: float, ce_val_top1: float, min_teacher: float = MIN_TEACHER_VAL,
                min_gap: float = MIN_GAP) -> Dict[str, object]:
    """``{met, teacher_val_top1, ce_val_top1, gap, min_teacher, min_gap}`` (fractions in [0, 1])."""
    t, c = float(teacher_val_top1), float(ce_val_top1)
    eps = 1e-9  # 0.70 - 0.50 is 0.19999999999999996 in floating point: a gap of exactly min_gap passes
    return {"met": bool(t >= min_teacher - eps and t - c >= min_gap - eps), "teacher_val_top1": t, "ce_val_top1": c,
            "gap": t - c, "min_teacher": float(min_teacher), "min_gap": float(min_gap)}


def regime_sentence(gate: Dict[str, object]) -> str:
    """One line for the console and the report."""
    word = "MET" if gate["met"] else "NOT MET"
    return (f"regime gate (validation only): {word} -- teacher zero-shot val top-1 {100 * gate['teacher_val_top1']:.1f}"
            f" (needs >= {100 * gate['min_teacher']:.0f}), CE student val top-1 {100 * gate['ce_val_top1']:.1f}, "
            f"gap {100 * gate['gap']:.1f} points (needs >= {100 * gate['min_gap']:.0f}): "
            + ("the teacher knows more than the student can learn from its labels."
               if gate["met"] else "distillation has little to teach in this setting; read the comparison with that "
                                   "in mind."))
