"""Every training loop runs on the one run lifecycle (issue 27 item 1): a NaN injected into each loop's loss stops it
with the same NonFiniteLossError, or with ``trainer.skip_nonfinite_steps=true`` is skipped, counted, and the run
finishes; the loops that had no resume of their own continue an interrupted run bit-identically."""
from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch

from lifecycle_loops import LOOPS, poisoned, run_demo_teacher, run_promptsrc, run_psc, run_upstream
from pand.engine.lifecycle import NonFiniteLossError

pytest.importorskip("open_clip")

#: the 0-based loss call that is poisoned: the second step of the first epoch (evaluation period) of every loop
AT = 1


def _patch(monkeypatch, name: str, at: int, effect: str = "nan") -> SimpleNamespace:
    module, attr, _ = LOOPS[name]
    mod = importlib.import_module(module)
    owner, leaf = (getattr(mod, attr.split(".")[0]), attr.split(".")[1]) if "." in attr else (mod, attr)
    counter = SimpleNamespace(n=0)
    monkeypatch.setattr(owner, leaf, poisoned(getattr(owner, leaf), at, counter, effect))
    return counter


@pytest.mark.parametrize("name", list(LOOPS))
def test_a_nan_stops_every_loop_with_one_error_unless_skipped(name, tmp_path, monkeypatch):
    run = LOOPS[name][2]
    _patch(monkeypatch, name, AT)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 0 step 1 of .*The step was not applied.*"
                                                 r"trainer\.skip_nonfinite_steps=true skips such steps"):
        run(tmp_path / "stop", False)

    _patch(monkeypatch, name, AT)
    with pytest.warns(UserWarning, match=r"step skipped \(trainer\.skip_nonfinite_steps=true\): non-finite loss at "
                                         r"epoch 0 step 1 of "):
        skipped, tensors = run(tmp_path / "skip", True)
    assert skipped[0] == 1 and sum(skipped) == 1  # the one poisoned step, counted where it happened
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def _interrupted_then_resumed(name, run, tmp_path, monkeypatch, at, **resume_kw):
    """A straight run, and a run interrupted (KeyboardInterrupt in its loss) at loss call ``at`` and then called
    again in the same place: their (skipped counts, result tensors), and the loss calls of the second call."""
    straight = run(tmp_path / "straight", False)
    _patch(monkeypatch, name, at, "interrupt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", False)
    monkeypatch.undo()
    counter = _patch(monkeypatch, name, 10 ** 9)
    resumed = run(tmp_path / "resumed", False, **resume_kw)
    monkeypatch.undo()
    return straight, resumed, counter.n


def _same(a, b):
    assert a[0] == b[0] and a[1].keys() == b[1].keys()
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def test_demo_teacher_continues_an_interrupted_pretraining_bit_identically(tmp_path, monkeypatch):
    # 6 steps, an evaluation (and checkpoint) every 2: interrupted in step 4 (after two checkpoints)
    straight, resumed, calls = _interrupted_then_resumed("demo_teacher", run_demo_teacher, tmp_path, monkeypatch, at=4)
    _same(straight, resumed)
    assert calls == 2  # continued from step 4
    assert not list((tmp_path / "resumed").rglob("checkpoints"))  # removed once the result is written


def test_upstream_continues_an_interrupted_pretraining_bit_identically(tmp_path, monkeypatch):
    # 2 epochs of 3 steps: interrupted in the second epoch's second step (epoch 0 checkpointed)
    straight, resumed, calls = _interrupted_then_resumed("upstream", lambda t, s: run_upstream(t, s, epochs=2),
                                                         tmp_path, monkeypatch, at=4)
    _same(straight, resumed)
    assert calls == 3 + 1  # continued from epoch 1 (its 3 steps), then the one validation batch


def _loss_calls(name, run, tmp_path, monkeypatch) -> int:
    """How many times one run of loop ``name`` computes its loss."""
    counter = _patch(monkeypatch, name, 10 ** 9)
    run(tmp_path, False)
    monkeypatch.undo()
    return counter.n


def test_psc_continues_an_interrupted_stage_bit_identically(tmp_path, monkeypatch):
    # 2 epochs: interrupted in the second step of the second one, after epoch 0 was checkpointed
    calls = _loss_calls("psc", run_psc, tmp_path / "count", monkeypatch)
    straight, resumed, again = _interrupted_then_resumed("psc", run_psc, tmp_path, monkeypatch, calls // 2 + 1)
    _same(straight, resumed)
    assert again == calls // 2  # continued from epoch 1


@pytest.mark.slow
def test_promptsrc_teacher_continues_an_interrupted_training_bit_identically(tmp_path, monkeypatch):
    # 2 PromptSRC epochs: interrupted in the second (the first is checkpointed under promptkd/promptsrc_checkpoints)
    calls = _loss_calls("promptsrc", run_promptsrc, tmp_path / "count", monkeypatch)
    straight, resumed, again = _interrupted_then_resumed("promptsrc", run_promptsrc, tmp_path, monkeypatch,
                                                         calls // 2 + 1, resume=True)
    _same(straight, resumed)
    assert again == calls // 2  # continued from epoch 1
