"""End to end on the synthetic benchmark: tiny random-init teacher (pand-tiny-vit) and student (pand-tiny-vit-s).

One run (module fixture, about 20 s on 2 CPU cores) is inspected by several tests. The teacher is random, so
the accuracies are near chance; what is checked is the protocol, the artifacts and their consistency.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def _cfg(tmp: Path, *overrides: str):
    from pand.config import load_config

    return load_config("configs/tiny.yaml", [
        "recipe=promptkd", "promptkd.teacher_prompts=handcrafted", f"cache_dir={tmp / 'cache'}",
        "data.synthetic.train_per_class=6", "data.synthetic.test_per_class=3", *overrides,
    ])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A complete inductive run with one cross-dataset evaluation; counts the teacher's text-encoder calls."""
    from pand.models.teacher import Teacher
    from pand.promptkd import run

    tmp = tmp_path_factory.mktemp("promptkd")
    other = tmp / "other_birds.yaml"
    other.write_text(json.dumps({
        "name": "synthetic", "template": "a photo of a {}.",
        "synthetic": {"seed": 5, "train_per_class": 2, "test_per_class": 2, "num_body_colors": 3},
    }))
    cfg = _cfg(tmp, f"promptkd.cross_eval=[{other}]", "promptkd.select=best_val", "promptkd.pool=inductive")
    calls = []
    original = Teacher.encode_text
    mp = pytest.MonkeyPatch()
    mp.setattr(Teacher, "encode_text", lambda self, prompts, **kw: calls.append(len(prompts)) or original(
        self, prompts, **kw))
    try:
        summary = run(cfg, tmp / "run", progress=False)
    finally:
        mp.undo()
    return {"cfg": cfg, "dir": tmp / "run", "summary": summary, "text_calls": calls, "tmp": tmp}


def test_summary_reports_base_novel_hm_for_teacher_and_student(finished):
    s, run_dir = finished["summary"], finished["dir"]
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == json.loads((run_dir / "promptkd" / "summary.json").read_text())
    assert on_disk["recipe"] == "promptkd" and on_disk["pool_mode"] == on_disk["regime"] == "inductive"
    assert on_disk["pool"]["mode"] == "inductive" and on_disk["pool"]["novel_class_images"] == 0
    for who in ("teacher", "student"):
        r = s["results"][who]
        assert 0.0 <= r["base"] <= 100.0 and 0.0 <= r["novel"] <= 100.0
        expected_hm = 0.0 if r["base"] + r["novel"] == 0 else 2 * r["base"] * r["novel"] / (r["base"] + r["novel"])
        assert r["hm"] == pytest.approx(expected_hm)
        assert r["n_base_images"] == 12 * 3 and r["n_novel_images"] == 12 * 3  # 24 classes, 3 test images each
        assert on_disk["side_by_side"]["hm"][who] == pytest.approx(r["hm"])
    assert s["classes"] == {"total": 24, "base": 12, "novel": 12, "in_training_logits": 12}


def test_inductive_pool_and_selection_never_touch_test(finished):
    s = finished["summary"]
    assert s["pool"]["test_images"] == 0 and s["pool"]["labels_used"] is False
    from pand.data import build_splits

    train = build_splits(finished["cfg"].data, cache_dir=finished["cfg"].cache_dir).train
    assert s["pool"]["images"] == sum(y < 12 for y in train.targets)  # base classes' training images only
    assert s["selection"]["uses_test"] is False and s["selection"]["select"] == "best_val"
    vals = [h["val_base_acc"] for h in s["history"]]
    assert len(vals) == 2 and s["selection"]["val"] == max(vals)
    assert "TRANSDUCTIVE" not in s["protocol"]


def test_text_encoder_runs_once_per_class_set(finished):
    # once for the run's 24 classes, once for the cross-dataset's 18; never inside training or evaluation
    assert finished["text_calls"] == [24, 18]
    cross = finished["summary"]["cross_eval"]
    (entry,) = cross.values()
    assert entry["num_classes"] == 18 and entry["n_images"] == 18 * 2
    assert 0.0 <= entry["student"] <= 100.0 and 0.0 <= entry["teacher"] <= 100.0


def test_class_vectors_file(finished):
    from pand.promptkd.class_vectors import load_class_vectors

    vec, meta = load_class_vectors(finished["dir"] / "promptkd" / "class_vectors.safetensors")
    assert vec.shape == (24, 64)  # pand-tiny-vit embed_dim
    torch.testing.assert_close(vec.norm(dim=1), torch.ones(24))
    assert meta["source"] == "handcrafted" and meta["prompts"][0] == meta["template"].format(meta["class_names"][0])


def test_exported_student_reproduces_the_reported_accuracy(finished):
    from pand.data import build_splits
    from pand.data.transforms import create_transform
    from pand.promptkd import load_promptkd_classifier
    from pand_runtime.preprocess_spec import PreprocessSpec

    clf, meta = load_promptkd_classifier(finished["dir"] / "student.safetensors")
    assert meta["kind"] == "promptkd" and meta["num_classes"] == 24 and meta["regime"] == "inductive"
    pp = PreprocessSpec.from_dict(meta["preprocess"])
    test = build_splits(finished["cfg"].data, cache_dir=finished["cfg"].cache_dir).test
    test = test.with_transform(create_transform(pp, False))
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor(test.targets)
    with torch.no_grad():
        acc = 100.0 * (clf(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(finished["summary"]["results"]["student"]["all"], abs=1e-4)


def test_gflops_teacher_vs_student(finished):
    g = finished["summary"]["gflops"]
    assert g["teacher"]["text_encoder_all_classes"] > 0 and g["student"]["prompted_encoder"] > 0
    t = g["teacher"]
    assert t["total"] == pytest.approx(t["image_encoder"] + t["text_encoder_all_classes"])
    assert g["teacher_over_student"] > 1


def test_rerun_without_resume_is_refused(finished):
    from pand.errors import ArtifactError
    from pand.promptkd import run

    vectors = finished["dir"] / "promptkd" / "class_vectors.safetensors"
    before = vectors.stat().st_mtime_ns
    with pytest.raises(ArtifactError, match="--resume"):
        run(finished["cfg"], finished["dir"], progress=False)
    assert vectors.stat().st_mtime_ns == before  # refused before anything was rewritten


def test_resume_of_a_finished_run_skips_training(finished):
    from pand.promptkd import run

    cfg = finished["cfg"].copy()
    cfg.promptkd.cross_eval = []  # evaluation-only settings may change on resume
    s = run(cfg, finished["dir"], resume=True, progress=False)
    assert s["history"] == finished["summary"]["history"]
    assert s["results"] == finished["summary"]["results"]


def test_resume_under_another_configuration_is_refused(finished):
    from pand.errors import ArtifactError
    from pand.promptkd import run

    cfg = finished["cfg"].copy()
    cfg.promptkd.lr = 0.1
    with pytest.raises(ArtifactError, match="promptkd.lr"):
        run(cfg, finished["dir"], resume=True, progress=False)
