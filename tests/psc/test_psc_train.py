"""Stage PSC training: pure math, selection on val, early stopping, resume, run_psc orchestration and reuse."""
from __future__ import annotations

import json
import math

import pytest
import torch

import pand.psc.loop as psc_loop
import pand.psc.stage as psc_stage
from pand.config.schema import PSCCfg
from pand.engine.optim import cosine_lr
from pand.errors import ArtifactError
from pand.psc import accuracy, coop_logits, load_anchors, run_psc, train_coop
from pand.psc.prompt_learner import build_coop_text_model
from pand.utils.io import read_json

from psc_toy import TOY_CLASSES


def test_cosine_lr():
    assert cosine_lr(0, 0.002, 10) == pytest.approx(0.002)
    assert cosine_lr(5, 0.002, 10) == pytest.approx(0.001)
    assert cosine_lr(9, 0.002, 10) == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert cosine_lr(0, 0.002, 10, warmup_epochs=2) == pytest.approx(1e-5)
    assert cosine_lr(1, 0.002, 10, warmup_epochs=2) == pytest.approx(1e-5)
    assert cosine_lr(2, 0.002, 10, warmup_epochs=2) == pytest.approx(0.002)
    assert cosine_lr(6, 0.002, 10, warmup_epochs=2) == pytest.approx(0.001)


def test_logits_and_accuracy():
    img = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    text = torch.eye(2)
    torch.testing.assert_close(coop_logits(img, text, 100.0), 100.0 * img @ text.t())
    assert accuracy(img[:2], torch.tensor([0, 1]), text) == 1.0
    assert accuracy(img[:2], torch.tensor([1, 1]), text) == 0.5
    assert math.isnan(accuracy(torch.empty(0, 2), torch.empty(0, dtype=torch.long), text))


def _toy_features(n_per_class: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(4, dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    y = torch.arange(4).repeat_interleave(n_per_class)
    x = torch.nn.functional.normalize(centres[y] + 0.3 * torch.randn(len(y), dim, generator=g), dim=-1)
    return x, y


def _cfg(**kw):
    base = dict(optimizer="adamw", lr=0.05, momentum=0.9, weight_decay=0.0, epochs=8, batch_size=8,
                warmup_epochs=0, patience=0, grad_clip=1.0)
    base.update(kw)
    return PSCCfg(**base)


def _model(teacher, seed=0):
    return build_coop_text_model(teacher.model, teacher.tokenizer, TOY_CLASSES, n_ctx=4, seed=seed)


def test_training_learns_and_selects_on_val(tmp_path, tiny_teacher):
    train, val = _toy_features(10, 64, 1), _toy_features(4, 64, 2)
    model = _model(tiny_teacher)
    ctx0 = model.prompt_learner.ctx.detach().clone()
    res = train_coop(model, train, val, _cfg(), tiny_teacher.logit_scale, tmp_path, progress=False)
    h = res.history
    assert len(h) == 8 == res.epochs_run
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    accs = [r["val_acc"] for r in h]
    assert res.best_epoch == accs.index(max(accs)) and res.best_val_acc == max(accs)
    assert max(accs) > 0.25  # better than chance on 4 classes
    assert not torch.equal(res.best_ctx, ctx0)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(8))
    assert json.loads(lines[0])["lr"] == pytest.approx(0.05)


def test_early_stopping(tmp_path, tiny_teacher):
    train, val = _toy_features(4, 64, 1), _toy_features(2, 64, 2)
    res = train_coop(_model(tiny_teacher), train, val, _cfg(lr=0.0, epochs=20, patience=2), tiny_teacher.logit_scale,
                     tmp_path, progress=False)
    assert res.epochs_run == 3 and res.best_epoch == 0  # nothing changes with lr 0: 1 best + 2 bad epochs


def test_no_val_keeps_last_epoch(tmp_path, tiny_teacher):
    train = _toy_features(4, 64, 1)
    model = _model(tiny_teacher)
    with pytest.warns(UserWarning, match="no validation"):
        res = train_coop(model, train, None, _cfg(epochs=3), tiny_teacher.logit_scale, tmp_path, progress=False)
    assert res.best_epoch == 2 and res.best_val_acc is None and "last" in res.selection
    torch.testing.assert_close(res.best_ctx, model.prompt_learner.ctx.detach())


def test_resume_gives_the_same_result(tmp_path, tiny_teacher, monkeypatch):
    train, val = _toy_features(6, 64, 1), _toy_features(3, 64, 2)
    cfg = _cfg(optimizer="sgd", lr=0.5, epochs=6)
    full = train_coop(_model(tiny_teacher), train, val, cfg, tiny_teacher.logit_scale, tmp_path / "a", seed=3,
                      config_hash="h", progress=False)
    calls = {"n": 0}
    real = psc_loop._write_metrics

    def crash_after_three(path, history):
        real(path, history)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(psc_loop, "_write_metrics", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        train_coop(_model(tiny_teacher), train, val, _cfg(optimizer="sgd", lr=0.5, epochs=6), tiny_teacher.logit_scale,
                   tmp_path / "b", seed=3, config_hash="h", progress=False)
    monkeypatch.setattr(psc_loop, "_write_metrics", real)
    resumed = train_coop(_model(tiny_teacher), train, val, _cfg(optimizer="sgd", lr=0.5, epochs=6),
                         tiny_teacher.logit_scale, tmp_path / "b", seed=3, config_hash="h", progress=False)
    assert [r["epoch"] for r in resumed.history] == list(range(6))
    torch.testing.assert_close(resumed.best_ctx, full.best_ctx, atol=1e-6, rtol=0)
    assert [r["val_acc"] for r in resumed.history] == [r["val_acc"] for r in full.history]
    # another config hash does not resume from that state
    fresh = train_coop(_model(tiny_teacher), train, val, _cfg(optimizer="sgd", lr=0.5, epochs=2),
                       tiny_teacher.logit_scale, tmp_path / "b", seed=3, config_hash="other", progress=False)
    assert [r["epoch"] for r in fresh.history] == [0, 1]


@pytest.fixture()
def psc_cfg(tmp_path):
    from pand.config import load_config

    return load_config("configs/tiny.yaml", [f"cache_dir={tmp_path / 'cache'}", "psc.epochs=4", "psc.n_ctx=4",
                                             "psc.optimizer=adamw", "psc.lr=0.05", "trainer.num_workers=0",
                                             "data.template=a photo of a {}, a type of bird."])


def test_run_psc_end_to_end_and_reuse(tmp_path, tiny_teacher, toy_splits, psc_cfg, monkeypatch):
    run_dir = tmp_path / "run"
    path = run_psc(psc_cfg, run_dir, splits=toy_splits, teacher=tiny_teacher)
    assert path == run_dir / "psc" / "learned_text_features.safetensors"
    feats, meta = load_anchors(path, 4, embed_dim=64, teacher_id=tiny_teacher.identity)
    assert meta["class_names"] == TOY_CLASSES and meta["n_ctx"] == 4 and meta["prompt_form"] == "template"
    assert meta["prompts"][0] == "a photo of a red cardinal, a type of bird."
    assert meta["ctx"].shape == (4, 64)
    summary = read_json(run_dir / "psc" / "summary.json")
    assert set(summary["coop"]) == {"train", "val", "test"} and set(summary["zero_shot"]) == {"train", "val", "test"}
    assert summary["counts"] == {"train": 24, "val": 12, "test": 12}
    # reported accuracies are those of the stored anchors on the cached features
    from pand.psc.features import extract_features

    for split in ("val", "test"):
        x, y = extract_features(tiny_teacher, getattr(toy_splits, split), tmp_path / "cache" / "features",
                                key_extra={"split": split, "data": "synthetic"}, progress=False)
        assert meta[f"{split}_acc"] == pytest.approx(accuracy(x, y, feats))
        assert summary["coop"][split] == meta[f"{split}_acc"]
    # selection on val only: the kept epoch is the best val epoch of metrics.jsonl
    hist = [json.loads(x) for x in (run_dir / "psc" / "metrics.jsonl").read_text().splitlines()]
    vals = [h["val_acc"] for h in hist]
    assert meta["best_epoch"] == vals.index(max(vals)) and "test_acc" not in hist[0]

    # a second call with the same settings reuses the artifact: no training
    def boom(*a, **k):
        raise AssertionError("PSC retrained although the artifact matches")

    monkeypatch.setattr(psc_stage, "train_coop", boom)
    assert run_psc(psc_cfg, run_dir, splits=toy_splits, teacher=tiny_teacher) == path
    # other psc settings -> retrained
    psc_cfg.psc.lr = 0.01
    with pytest.raises(AssertionError, match="retrained"):
        run_psc(psc_cfg, run_dir, splits=toy_splits, teacher=tiny_teacher)

    # psc.artifact short-circuits to that file (after checking it), no training
    psc_cfg.psc.artifact = str(path)
    assert run_psc(psc_cfg, tmp_path / "other_run", splits=toy_splits, teacher=tiny_teacher) == path
    from pand.data.base import DataSplits

    three = DataSplits(train=toy_splits.train, val=toy_splits.val, test=toy_splits.test, class_names=TOY_CLASSES[:3])
    with pytest.raises(ArtifactError, match="4 classes but the dataset has 3"):
        run_psc(psc_cfg, tmp_path / "other_run", splits=three, teacher=tiny_teacher)
