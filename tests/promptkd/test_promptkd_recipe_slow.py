"""Slow PromptKD runs (``--runslow``): bit-exact resume after an interruption, and PSC-tuned teacher prompts."""
from __future__ import annotations

import pytest
import torch

from pand.config import load_config

pytestmark = pytest.mark.slow


def _cfg(tmp, *overrides):
    return load_config("configs/tiny.yaml", [
        "recipe=promptkd", "promptkd.teacher_prompts=handcrafted", f"cache_dir={tmp / 'cache'}",
        "data.synthetic.train_per_class=4", "data.synthetic.test_per_class=2", "promptkd.epochs=3",
        "promptkd.warmup_epochs=1", *overrides,
    ])


def _straight_and_interrupted(cfg, tmp_path, monkeypatch, stop_epoch, before_resume=None):
    """A straight run, and a run interrupted (KeyboardInterrupt) at ``stop_epoch`` then resumed: their summaries."""
    import pand.promptkd.train as train
    from pand.promptkd import run

    straight = run(cfg, tmp_path / "straight", progress=False)
    original = train.train_epoch

    def interrupted(ctx, loader, source, optimizer, scaler, epoch):
        if epoch == stop_epoch:
            raise KeyboardInterrupt
        return original(ctx, loader, source, optimizer, scaler, epoch)

    monkeypatch.setattr(train, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train, "train_epoch", original)
    if before_resume is not None:
        before_resume()
    return straight, run(cfg, tmp_path / "resumed", resume=True, progress=False)


def test_interrupted_run_resumes_bit_exactly(tmp_path, monkeypatch):
    from pand.utils.io import load_tensors

    cfg = _cfg(tmp_path)
    straight, resumed = _straight_and_interrupted(cfg, tmp_path, monkeypatch, stop_epoch=2)

    a = load_tensors(tmp_path / "straight" / "student.safetensors")[0]
    b = load_tensors(tmp_path / "resumed" / "student.safetensors")[0]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    assert resumed["results"] == straight["results"]


def test_coop_teacher_prompts_are_learned_on_base_classes_only(tmp_path):
    from pand.promptkd import run
    from pand.utils.io import load_tensors

    # "psc" is the old name of teacher_prompts=coop and still accepted
    cfg = _cfg(tmp_path, "promptkd.teacher_prompts=psc", "promptkd.epochs=1", "psc.epochs=2")
    s = run(cfg, tmp_path / "run", progress=False)
    assert s["class_vectors"]["source"] == s["teacher_prompts"] == "coop"
    assert s["class_vectors"]["psc_trained_on"] == "base classes only"
    _, psc_meta = load_tensors(tmp_path / "run" / "psc" / "learned_text_features.safetensors")
    assert len(psc_meta["class_names"]) == 12  # PSC saw the 12 base classes and nothing else
    _, cv_meta = load_tensors(tmp_path / "run" / "promptkd" / "class_vectors.safetensors")
    assert cv_meta["num_classes"] == 24 and cv_meta["class_names"][:12] == psc_meta["class_names"]


def test_promptsrc_run_resumes_without_retraining_the_teacher(tmp_path, monkeypatch):
    from pand.promptkd import class_vectors

    cfg = _cfg(tmp_path, "promptkd.teacher_prompts=promptsrc", "promptkd.promptsrc.epochs=2", "promptkd.epochs=2")
    straight, resumed = _straight_and_interrupted(
        cfg, tmp_path, monkeypatch, stop_epoch=1,
        before_resume=lambda: monkeypatch.setattr(class_vectors, "train_promptsrc_teacher",
                                                  lambda *a, **k: pytest.fail("teacher retrained")))
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    assert resumed["results"] == straight["results"]
    assert resumed["class_vectors"]["promptsrc_prompts_sha"] == straight["class_vectors"]["promptsrc_prompts_sha"]
