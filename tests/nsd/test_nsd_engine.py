"""Stage NSD engine on toy data: recipes, checkpoints, bit-exact resume, refusals, NaN stop."""
import json

import pytest
import torch

from pand.config import ConfigError
from pand.errors import ArtifactError
from pand.nsd import LiveTeacher, NonFiniteLossError, fit
from pand.engine.checkpoint import best_weights_path
from pand.nsd.metrics import read_metrics
from pand.utils.io import load_tensors

from nsd_sources import NaNAt


def _fit(toy, out, cfg, splits=None, teacher=None, anchors=None, **kw):
    splits = splits or toy.make_splits()
    teacher = teacher or toy.FakeTeacher()
    source = LiveTeacher(teacher, toy.mean, toy.std)
    anchors = toy.make_anchors() if anchors is None else anchors
    return fit(cfg, out, splits, source, anchors, **kw)


def test_pand_recipe_runs_logs_and_checkpoints(toy, tmp_path):
    cfg = toy.make_cfg("recipe=pand")
    res = _fit(toy, tmp_path, cfg)
    assert 0.0 <= res.val_top1 <= 1.0 and 0.0 <= res.test_top1 <= 1.0
    assert res.test["n"] == 16  # exact test set
    assert set(res.final_terms) == {"loss", "ce", "l1", "kl", "nlrd"}
    assert "linear_cls.weight" in res.student_state and not any(k.startswith("heads") for k in res.student_state)
    recs = read_metrics(tmp_path / "metrics.jsonl")
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    e1 = epochs[1]
    for k in ("ce", "l1", "kl", "nlrd", "w_ce", "w_kd", "coef_ce", "coef_l1", "coef_kl", "coef_nlrd", "val_top1"):
        assert k in e1
    assert e1["w_ce"] == pytest.approx(1 / (8 * 3)) and e1["coef_l1"] == pytest.approx((1 - 1 / 24) / 2)
    assert sum(r["kind"] == "test" for r in recs) == 1
    ck = tmp_path / "checkpoints"
    ptr = json.loads((ck / "last.json").read_text())
    assert ptr["epoch"] == 2 and (ck / ptr["dir"] / "state.pt").is_file()
    assert best_weights_path(ck).parent.name == f"epoch_{res.best_epoch:04d}"
    kept = sorted(p.name for p in ck.glob("epoch_*"))
    assert kept == sorted({"epoch_0002", f"epoch_{res.best_epoch:04d}"})


def test_teacher_sees_student_pixels_renormalised_and_resized(toy, tmp_path):
    teacher = toy.FakeTeacher(image_size=16)
    _fit(toy, tmp_path, toy.make_cfg("recipe=pand", "nsd.epochs=1"), teacher=teacher)
    assert teacher.seen and all(x.shape[-2:] == (16, 16) for x in teacher.seen)


@pytest.mark.parametrize("recipe,terms", [("ce", {"loss", "ce"}), ("vl2lite", {"loss", "ce", "l1", "kl"})])
def test_baseline_recipes(toy, tmp_path, recipe, terms):
    res = _fit(toy, tmp_path, toy.make_cfg(f"recipe={recipe}", "nsd.epochs=1"))
    assert set(res.final_terms) == terms
    heads = [k for k in load_tensors(best_weights_path(tmp_path / "checkpoints"))[0] if k.startswith("heads.")]
    assert bool(heads) == (recipe != "ce")


class _Interrupt(Exception):
    pass


def test_resume_after_mid_epoch_kill_is_bit_exact(toy, tmp_path):
    cfg = toy.make_cfg("recipe=pand")
    ref = _fit(toy, tmp_path / "a", cfg)

    def hook(epoch, step):
        if epoch == 1 and step == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        _fit(toy, tmp_path / "b", cfg, step_hook=hook)
    with pytest.raises(ArtifactError, match="--resume"):
        _fit(toy, tmp_path / "b", cfg)  # refuses to overwrite without --resume
    res = _fit(toy, tmp_path / "b", cfg, resume=True)
    assert res.best_epoch == ref.best_epoch and res.test_top1 == ref.test_top1
    for k, v in ref.student_state.items():
        assert torch.equal(v, res.student_state[k]), k
    last = load_tensors(tmp_path / "b" / "checkpoints" / "epoch_0002" / "model.safetensors")[0]
    last_ref = load_tensors(tmp_path / "a" / "checkpoints" / "epoch_0002" / "model.safetensors")[0]
    assert all(torch.equal(last[k], last_ref[k]) for k in last_ref)
    recs = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [0, 1, 2]
    ref_recs = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["loss"] for r in recs if r["kind"] == "step"] == [r["loss"] for r in ref_recs if r["kind"] == "step"]


def test_resume_refuses_other_config(toy, tmp_path):
    _fit(toy, tmp_path, toy.make_cfg("recipe=pand", "nsd.epochs=1"))
    with pytest.raises(ArtifactError) as e:
        _fit(toy, tmp_path, toy.make_cfg("recipe=pand", "nsd.epochs=1", "nsd.lr=0.5", "nsd.nlrd.k=2"), resume=True)
    assert "nsd.lr" in str(e.value) and "nsd.nlrd.k" in str(e.value) and "checkpoint=0.01" in str(e.value)
    # ignorable settings may change
    _fit(toy, tmp_path, toy.make_cfg("recipe=pand", "nsd.epochs=1", "trainer.log_every=5"), resume=True)


def test_nan_loss_stops_with_step_term_and_last_checkpoint(toy, tmp_path):
    cfg = toy.make_cfg("recipe=pand")
    source = NaNAt(LiveTeacher(toy.FakeTeacher(), toy.mean, toy.std), epoch=1, step=1)
    with pytest.raises(NonFiniteLossError) as e:
        fit(cfg, tmp_path, toy.make_splits(), source, toy.make_anchors())
    msg = str(e.value)
    assert "epoch 1 step 1" in msg and "term 'l1'" in msg and "teacher features are non-finite" in msg
    assert "epoch 0; resume with --resume" in msg
    ck = tmp_path / "checkpoints"
    assert json.loads((ck / "last.json").read_text())["epoch"] == 0
    assert sorted(p.name for p in ck.glob("epoch_*")) == ["epoch_0000"]


def test_bad_inputs(toy, tmp_path):
    cfg = toy.make_cfg("recipe=pand", "nsd.epochs=1")
    with pytest.raises(ArtifactError, match="dimension mismatch"):
        _fit(toy, tmp_path / "a", cfg, anchors=toy.make_anchors(dim=5))
    with pytest.raises(ArtifactError, match="4 classes"):
        _fit(toy, tmp_path / "b", cfg, anchors=toy.make_anchors(num_classes=3))
    with pytest.raises(ConfigError, match="Unknown student 'resnet_nope'.*resnet18"):
        _fit(toy, tmp_path / "c", toy.make_cfg("recipe=pand", "student.arch=resnet_nope"))


def test_cuda_oom_becomes_actionable_message(toy, tmp_path, monkeypatch):
    import pand.nsd.engine as engine
    from pand.errors import PandError

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "_train_step", oom)
    with pytest.raises(PandError) as e:
        _fit(toy, tmp_path, toy.make_cfg("recipe=pand", "nsd.epochs=1"))
    msg = str(e.value)
    assert "out of memory" in msg and "8 images per device" in msg and "nsd.batch_size" in msg and "bf16" in msg


def test_tensorboard_events_written(toy, tmp_path):
    _fit(toy, tmp_path, toy.make_cfg("recipe=pand", "nsd.epochs=1", "trainer.tensorboard=true"))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
