"""The demo's regime gate: thresholds, and that it is decided from validation numbers only."""
import inspect

import pytest

from pand.demo.regime import MIN_GAP, MIN_TEACHER_VAL, regime_gate, regime_sentence


@pytest.mark.parametrize("teacher,ce,met", [
    (0.975, 0.423, True),   # the demo's measured numbers
    (0.59, 0.10, False),    # teacher below 60%
    (0.70, 0.51, False),    # gap of 19 points
    (0.70, 0.50, True),     # exactly 60% / 20 points pass
])
def test_gate_thresholds(teacher, ce, met):
    g = regime_gate(teacher, ce)
    assert g["met"] is met and g["gap"] == pytest.approx(teacher - ce)
    assert ("MET" if met else "NOT MET") in regime_sentence(g)


def test_gate_takes_only_validation_numbers():
    # the gate's inputs are the teacher's and the CE student's *validation* top-1; nothing else can reach it
    params = list(inspect.signature(regime_gate).parameters)
    assert params[:2] == ["teacher_val_top1", "ce_val_top1"] and not any("test" in p for p in params)
    assert (MIN_TEACHER_VAL, MIN_GAP) == (0.60, 0.20)
