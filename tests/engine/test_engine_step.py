"""pand.engine.step: one optimisation step (clipping really clips, a disabled scaler changes nothing) and the
non-finite-loss policy."""
from __future__ import annotations

import pytest
import torch

from pand.engine.step import nonfinite_step, optimizer_step
from pand.errors import PandError


def _setup(grad_scale: float):
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=1.0)
    target = torch.tensor([3.0, 4.0, 0.0]) * grad_scale
    loss = -(w * target).sum()  # d loss / d w = -target
    return w, opt, loss


def test_clipping_clips_the_global_norm():
    w, opt, loss = _setup(10.0)  # gradient norm 50
    optimizer_step(loss, opt, clip=1.0, params=[w])
    # SGD lr 1: w = -grad, with the gradient scaled to norm 1
    torch.testing.assert_close(w.detach(), torch.tensor([0.6, 0.8, 0.0]))
    assert float(w.detach().norm()) == pytest.approx(1.0)


def test_no_clip_and_small_gradients_pass_unchanged():
    w, opt, loss = _setup(1.0)
    optimizer_step(loss, opt)
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0, 0.0]))
    w, opt, loss = _setup(0.1)  # norm 0.5 < clip
    optimizer_step(loss, opt, clip=1.0, params=[w])
    torch.testing.assert_close(w.detach(), torch.tensor([0.3, 0.4, 0.0]))


def test_disabled_scaler_equals_plain_step():
    a, opt_a, loss_a = _setup(10.0)
    b, opt_b, loss_b = _setup(10.0)
    optimizer_step(loss_a, opt_a, clip=2.0, params=[a])
    optimizer_step(loss_b, opt_b, scaler=torch.amp.GradScaler("cpu", enabled=False), clip=2.0, params=[b])
    assert torch.equal(a.detach(), b.detach())


def test_step_resets_previous_gradients():
    w, opt, loss = _setup(1.0)
    w.grad = torch.full((3,), 100.0)  # a stale gradient must not leak into the update
    optimizer_step(loss, opt)
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0, 0.0]))


def test_nonfinite_step_raises_or_skips_with_a_warning():
    w, opt, _ = _setup(1.0)
    err = PandError("non-finite loss at epoch 2 step 5. The step was not applied; lower the lr")
    with pytest.raises(PandError, match="epoch 2 step 5"):
        nonfinite_step(err, skip=False, optimizer=opt)
    w.grad = torch.ones(3)
    with pytest.warns(UserWarning, match=r"^step skipped \(trainer.skip_nonfinite_steps=true\): non-finite loss at "
                                         r"epoch 2 step 5$"):
        nonfinite_step(err, skip=True, optimizer=opt)
    assert w.grad is None
