"""pand.engine.optim: the optimiser factory, the per-epoch scheduler's LR sequence, the closed-form cosine LR."""
from __future__ import annotations

import math

import pytest
import torch

from pand.engine.optim import build_optimizer, build_scheduler, cosine_lr, set_lr
from pand.errors import PandError


def _params():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    b.requires_grad_(False)
    return a, b


def test_build_optimizer_kinds_and_frozen_params_dropped():
    a, b = _params()
    sgd = build_optimizer([a, b], "sgd", lr=0.1, weight_decay=0.01, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD)
    g = sgd.param_groups[0]
    assert g["params"] == [a] and (g["lr"], g["momentum"], g["weight_decay"]) == (0.1, 0.8, 0.01)
    adamw = build_optimizer([a, b], "adamw", lr=0.2, weight_decay=0.1)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["params"] == [a]
    with pytest.raises(PandError, match=r"psc.optimizer must be one of sgd, adamw, got 'adam'"):
        build_optimizer([a], "adam", lr=0.1, setting="psc.optimizer")


def _lrs(opt, sched, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_scheduler_lr_sequence():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    lrs = _lrs(opt, build_scheduler(opt, "cosine", epochs=4, eta_min=0.0), 5)
    expected = [0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_warmup_then_cosine_and_step_and_none():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    lrs = _lrs(opt, build_scheduler(opt, "cosine", epochs=4, warmup_epochs=2, eta_min=0.0), 4)
    # linear ramp 1/3, 2/3, then the cosine over the remaining 2 epochs: 1, 0.5
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5], abs=1e-12)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    assert _lrs(opt, build_scheduler(opt, "step", epochs=9, step_size=2, gamma=0.5), 5) == pytest.approx(
        [1.0, 1.0, 0.5, 0.5, 0.25])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.3)
    assert _lrs(opt, build_scheduler(opt, "none", epochs=3), 3) == [0.3, 0.3, 0.3]
    with pytest.raises(PandError, match="nsd.scheduler must be one of cosine, step, none"):
        build_scheduler(opt, "linear", epochs=3, setting="nsd.scheduler")


def test_cosine_lr_coop_and_dassl_variants():
    # CoOp: constant warm-up, then the cosine over the remaining T = 3 epochs (0 would be reached at epoch 4)
    assert [cosine_lr(e, 0.002, 4, warmup_epochs=1) for e in range(4)] == pytest.approx(
        [1e-5, 0.002, 0.0015, 0.0005], abs=1e-15)
    assert cosine_lr(10, 0.002, 4) == pytest.approx(0.0, abs=1e-15)  # past the end: stays at the floor
    # Dassl (PromptKD): the cosine spans all epochs, the last LR stays > 0
    dassl = [cosine_lr(e, 1.0, 4, warmup_epochs=1, cosine_epochs=4) for e in range(4)]
    assert dassl == pytest.approx([1e-5] + [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(3)])
    assert dassl[-1] > 0


def test_set_lr_writes_every_group():
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert set_lr(opt, 0.01) == 0.01
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]
