"""pand.engine.checkpoint: a resumed run continues bit for bit; the safe loader refuses pickled objects."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from pand.engine.checkpoint import (
    capture_rng, check_resume_config, config_diff, load_last_checkpoint, restore_rng, safe_torch_load,
    save_checkpoint, split_prefixed,
)
from pand.engine.optim import build_optimizer, build_scheduler
from pand.engine.step import optimizer_step
from pand.errors import ArtifactError

EPOCHS = 4


def _build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 3))
    opt = build_optimizer(model.parameters(), "sgd", lr=0.1, weight_decay=1e-3, momentum=0.9)
    return model, opt, build_scheduler(opt, "cosine", EPOCHS, warmup_epochs=1, eta_min=1e-3)


def _epoch(model, opt):
    for _ in range(3):  # data, dropout, python and numpy randomness all come from the global RNGs
        x = torch.randn(5, 4) + random.random() + float(np.random.rand())
        y = torch.randint(0, 3, (5,))
        optimizer_step(torch.nn.functional.cross_entropy(model(x), y), opt, clip=1.0, params=model.parameters())


def _seed_all():
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)


def test_resume_continues_bit_identically(tmp_path):
    model, opt, sched = _build()
    _seed_all()
    for _ in range(EPOCHS):
        _epoch(model, opt)
        sched.step()
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model, opt, sched = _build()
    _seed_all()
    for epoch in range(2):
        _epoch(model, opt)
        sched.step()
        state = {"epoch": epoch, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": capture_rng()}
        save_checkpoint(tmp_path, epoch, {f"model.{k}": v for k, v in model.state_dict().items()}, state,
                        {"seed": 1}, best_epoch=epoch)
    torch.manual_seed(999)  # whatever happens to the RNGs in between is undone by the resume
    random.seed(999)
    np.random.seed(999)

    model, opt, sched = _build()
    tensors, meta, state, where = load_last_checkpoint(tmp_path)
    assert where.name == "epoch_0001" and meta["config"] == {"seed": 1} and state["epoch"] == 1
    model.load_state_dict(split_prefixed(tensors, "model"))
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    for _ in range(state["epoch"] + 1, EPOCHS):
        _epoch(model, opt)
        sched.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, straight[k]), k


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_safe_loader_refuses_a_pickle_with_a_clear_error(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, bad)
    with pytest.raises(ArtifactError) as e:
        safe_torch_load(bad, "student.weights file", "Pass a safetensors file.")
    msg = str(e.value)
    assert msg.startswith(f"student.weights file {bad} cannot be read safely (")
    assert "objects other than tensors" in msg and msg.endswith("Pass a safetensors file.")
    assert "weights_only=False" not in msg  # torch's own text suggests the unsafe load: never repeated
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ArtifactError, match="cannot be read safely"):
        safe_torch_load(raw, "training state", "Delete it.")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ArtifactError, match="cannot be read safely"):
        safe_torch_load(empty, "training state", "Delete it.")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3), "epoch": 2, "names": ["a"]}, good)
    loaded = safe_torch_load(good, "training state", "")
    assert torch.equal(loaded["w"], torch.arange(3)) and loaded["epoch"] == 2 and loaded["names"] == ["a"]


def test_rng_capture_restore_roundtrip(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    state = capture_rng()
    torch.save(state, tmp_path / "s.pt")
    a = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    restore_rng(torch.load(tmp_path / "s.pt", weights_only=True))
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_config_diff_and_refusal():
    old = {"nsd": {"lr": 0.1, "nlrd": {"k": 3}}, "trainer": {"num_workers": 2}, "run_dir": "a"}
    new = {"nsd": {"lr": 0.2, "nlrd": {"k": 3}, "extra": 1}, "trainer": {"num_workers": 8}, "run_dir": "b"}
    assert config_diff(old, new) == [("nsd.extra", "<absent>", 1), ("nsd.lr", 0.1, 0.2)]
    # a setting added after the checkpoint, left unset (null), is no difference; set, or removed, it is one
    assert config_diff(old, dict(old, student={"bn_momentum": None})) == []
    assert config_diff(old, dict(old, student={"bn_momentum": 0.1})) == [("student.bn_momentum", "<absent>", 0.1)]
    assert config_diff(dict(old, student={"bn_momentum": None}), old) == [("student.bn_momentum", None, "<absent>")]
    check_resume_config(old, dict(old, run_dir="elsewhere"), "x")  # ignored keys only
    with pytest.raises(ArtifactError, match="nsd.lr: checkpoint=0.1 now=0.2"):
        check_resume_config(old, new, "x")
