"""The run lifecycle (pand.engine.lifecycle) on its own: selection, fresh-or-resume, checkpoints with RNG, the
non-finite policy; and the in-memory teacher cache the views=auto probe times."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from pand.engine.lifecycle import AUTO, Best, NonFiniteLossError, RunLifecycle
from pand.errors import ArtifactError


def test_best_keeps_the_first_highest_and_counts_evaluations_since():
    b = Best()
    assert b.offer(0, 0.5) and (b.epoch, b.value, b.since) == (0, 0.5, 0)
    assert not b.offer(1, 0.5) and not b.offer(2, 0.4) and (b.epoch, b.since) == (0, 2)  # ties keep the first
    assert not b.offer(3, None) and b.since == 2  # no evaluation this epoch: nothing changes
    assert b.offer(4, 0.6) and (b.epoch, b.since) == (4, 0)
    b.take(5)
    assert (b.epoch, b.value) == (5, None)


def _life(root, resume=False, config=None, **kw):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    life = RunLifecycle("a test loop", False, root, config or {"lr": 0.1}, resume, {"optimizer": opt},
                        "Lower the lr", **kw)
    return life, model, opt


def _train_step(model, opt):
    loss = model(torch.randn(4, 3)).pow(2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_a_resumed_run_gets_back_parts_rng_best_and_its_own_state(tmp_path):
    life, model, opt = _life(tmp_path / "ck")
    assert life.open() is None and life.start == 0
    torch.manual_seed(0)
    for epoch in range(2):
        _train_step(model, opt)
        life.best.offer(epoch, [0.3, 0.2][epoch])
        life.save(epoch, {"w": model.weight}, history=[epoch])
    expected = (torch.rand(3), random.random(), np.random.rand())

    again, model2, opt2 = _life(tmp_path / "ck", resume=True)
    ck = again.open()
    assert ck is not None and ck.state["history"] == [1] and torch.equal(ck.tensors["w"], model.weight)
    model2.weight.data.copy_(ck.tensors["w"])
    torch.manual_seed(123)
    again.restore(ck)
    assert again.start == 2 and (again.best.epoch, again.best.value, again.best.since) == (0, 0.3, 1)
    buffers = [o.state_dict()["state"][0]["momentum_buffer"] for o in (opt, opt2)]
    assert torch.equal(*buffers)
    got = (torch.rand(3), random.random(), np.random.rand())  # the draws that followed the checkpoint
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    assert json.loads((tmp_path / "ck" / "last.json").read_text())["best_dir"] == "epoch_0000"
    assert again.best_tensors()[0]["w"].shape == (2, 3)


def test_fresh_refuses_a_checkpoint_and_resume_refuses_another_configuration(tmp_path):
    life, model, _ = _life(tmp_path / "ck")
    life.open()
    life.save(0, {"w": model.weight})
    with pytest.raises(ArtifactError, match="pass --resume to continue it or choose another --run-dir"):
        _life(tmp_path / "ck")[0].open()
    with pytest.raises(ArtifactError, match=r"lr: checkpoint=0.1 now=0.2"):
        _life(tmp_path / "ck", resume=True, config={"lr": 0.2})[0].open()


def test_auto_continues_the_same_inputs_and_starts_over_for_others(tmp_path):
    life, model, _ = _life(tmp_path / "ck", resume=AUTO)
    life.open()
    life.save(0, {"w": model.weight})
    assert _life(tmp_path / "ck", resume=AUTO)[0].open() is not None
    assert _life(tmp_path / "ck", resume=AUTO, config={"lr": 0.2})[0].open() is None  # other inputs: start over
    (tmp_path / "ck" / "epoch_0000" / "state.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ignoring the unreadable a test loop checkpoint"):
        assert _life(tmp_path / "ck", resume=AUTO)[0].open() is None


def test_finite_raises_naming_the_step_or_skips_dropping_the_gradients(tmp_path):
    life, model, opt = _life(tmp_path / "ck")
    life.open()
    assert life.finite(torch.tensor([1.0, 2.0]), opt, 0, 0)
    stop = (r"^non-finite loss at epoch 3 step 7 of a test loop \(loss was nan\)\. The step was not applied and "
            r"nothing was overwritten\. Last good checkpoint: none yet .*Lower the lr; trainer\.skip_nonfinite_steps")
    with pytest.raises(NonFiniteLossError, match=stop):
        life.finite(torch.tensor(float("nan")), opt, 3, 7, lambda: "loss was nan")
    model(torch.ones(1, 3)).sum().backward()
    life.skip = True
    with pytest.warns(UserWarning, match=r"^step skipped \(trainer\.skip_nonfinite_steps=true\): non-finite loss at "
                                         r"epoch 3 step 7 of a test loop \(loss = \[1.0, inf\]\)$"):
        assert not life.finite(torch.tensor([1.0, float("inf")]), opt, 3, 7)
    assert all(p.grad is None for p in model.parameters())


def test_in_memory_teacher_cache_looks_up_like_a_built_one():
    from pand.nsd.teacher_cache import TeacherFeatureCache

    feats = np.arange(5 * 2 * 3, dtype=np.float16).reshape(5, 2, 3)
    table = TeacherFeatureCache.in_memory(feats)
    assert (table.count, table.views, table.embed_dim) == (5, 2, 3)
    out = table.lookup([4, 0], [1, 0])
    assert out.dtype == torch.float32 and torch.equal(out, torch.tensor(np.stack([feats[4, 1], feats[0, 0]])).float())
