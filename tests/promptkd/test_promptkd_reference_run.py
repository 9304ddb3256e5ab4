"""End to end through pand-train's entry point with the defaults: reference pool + PromptSRC teacher (tiny models).

One small run (module fixture, ~10 s on 2 CPU cores) is inspected; the last tests rerun into it and must be
refused without writing anything (issue #20 item 4: config.yaml included).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

_OVERRIDES = ("recipe=promptkd", "data.synthetic.train_per_class=3", "data.synthetic.test_per_class=1",
              "promptkd.epochs=1", "promptkd.promptsrc.epochs=2", "trainer.num_workers=0")


def _cfg(tmp: Path, *overrides: str):
    from pand.config import load_config

    return load_config("configs/tiny.yaml", [*_OVERRIDES, f"cache_dir={tmp / 'cache'}", *overrides])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from pand.train import run

    tmp = tmp_path_factory.mktemp("promptkd_reference")
    cfg = _cfg(tmp)
    assert cfg.promptkd.pool == "reference" and cfg.promptkd.teacher_prompts == "promptsrc"  # the defaults
    summary = run(cfg, tmp / "run")
    return {"cfg": cfg, "dir": tmp / "run", "summary": summary, "tmp": tmp}


def _snapshot(root: Path) -> dict:
    # the run-directory lock file (if pand-train keeps one) is not run output
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".pand.lock"}


def test_summary_names_the_reference_pool_and_it_holds_every_training_image(finished):
    from pand.data import build_splits
    from pand.promptkd import resolve_base_novel

    s = finished["summary"]
    splits = build_splits(finished["cfg"].data, cache_dir=finished["cfg"].cache_dir)
    assert s["pool_mode"] == "reference" and s["pool"]["mode"] == "reference" and not s["pool"]["transductive"]
    assert s["protocol"].startswith("reference:") and "TRANSDUCTIVE" not in s["protocol"]
    assert s["pool"]["images"] == len(splits.train) and s["pool"]["test_images"] == 0
    _, novel = resolve_base_novel(splits)
    assert s["pool"]["novel_class_images"] == sum(y in novel for y in splits.train.targets) > 0
    assert s["classes"]["in_training_logits"] == len(splits.class_names)
    assert s["kd_weight"] == {"value": 1.0, "source": "promptkd.kd_weight (set in the config)"}  # tiny.yaml's
    on_disk = json.loads((finished["dir"] / "summary.json").read_text())
    assert on_disk["pool_mode"] == "reference"


def test_promptsrc_teacher_gives_the_class_vectors_and_the_teacher_image_features(finished):
    from pand.models.teacher import create_teacher
    from pand.promptkd.promptsrc import load_promptsrc_artifact, prompted_teacher, promptsrc_text_features
    from pand.utils.io import load_tensors

    s, run_dir = finished["summary"], finished["dir"]
    assert s["teacher_prompts"] == "promptsrc" and "PromptSRC" in s["teacher_step"]
    cv = s["class_vectors"]
    assert cv["promptsrc_trained_on"].startswith("base classes only")
    teacher = create_teacher(finished["cfg"].teacher)
    prompts, meta = load_promptsrc_artifact(run_dir / "promptkd" / "promptsrc_teacher.safetensors", teacher)
    assert len(meta["base_class_names"]) == 12 and len(meta["history"]) == 2
    tensors, cv_meta = load_tensors(run_dir / "promptkd" / "class_vectors.safetensors")
    names = list(cv_meta["class_names"])
    again = torch.nn.functional.normalize(promptsrc_text_features(teacher, prompts, meta, names), dim=-1)
    torch.testing.assert_close(tensors["class_vectors"], again, rtol=0, atol=1e-5)  # learned prompts, every class
    assert set(meta["base_class_names"]) < set(names)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(prompted_teacher(teacher, prompts, meta).encode_image(x), teacher.encode_image(x),
                              atol=1e-4)  # the distillation target is the prompted image tower
    assert load_tensors(run_dir / "student.safetensors")[1]["pool"] == "reference"


def test_a_refused_rerun_writes_nothing(finished):
    from pand.errors import ArtifactError
    from pand.train import run

    run_dir = finished["dir"]
    saved_config = (run_dir / "config.yaml").read_text()
    before = _snapshot(run_dir)
    with pytest.raises(ArtifactError, match="nothing was overwritten"):  # a new run into a trained directory
        run(_cfg(finished["tmp"], "promptkd.lr=0.01"), run_dir)
    assert _snapshot(run_dir) == before
    with pytest.raises(ArtifactError, match="promptkd.lr"):  # --resume under another configuration
        run(_cfg(finished["tmp"], "promptkd.lr=0.01"), run_dir, resume=True)
    assert _snapshot(run_dir) == before
    assert (run_dir / "config.yaml").read_text() == saved_config
    # pand-export still reads the finished run's own configuration
    from pand.config import load_config

    assert load_config(run_dir / "config.yaml").promptkd.lr == finished["cfg"].promptkd.lr
