"""run_promptkd_grid: one row per (teacher, pool), the teacher trained once per kind and reused across pools."""
from __future__ import annotations

import pytest


def test_grid_rows_and_teacher_reuse(tmp_path, monkeypatch):
    from pand.config import load_config
    from pand.promptkd import class_vectors, run_promptkd_grid

    cfg = load_config("configs/tiny.yaml", [
        "recipe=promptkd", f"cache_dir={tmp_path / 'cache'}", "data.synthetic.train_per_class=2",
        "data.synthetic.test_per_class=1", "promptkd.epochs=1", "promptkd.promptsrc.epochs=1",
        "trainer.num_workers=0", "promptkd.regime=transductive",  # replaced per run, deprecated key included
    ])
    trained = []
    original = class_vectors.train_promptsrc_teacher
    monkeypatch.setattr(class_vectors, "train_promptsrc_teacher",
                        lambda *a, **k: trained.append(1) or original(*a, **k))
    rows = run_promptkd_grid(cfg, tmp_path / "grid", pools=("reference", "inductive"), teachers=("promptsrc",))
    assert [(r["teacher_prompts"], r["pool"]) for r in rows] == [("promptsrc", "reference"), ("promptsrc", "inductive")]
    assert len(trained) == 1  # the second pool reuses the first run's PromptSRC prompts
    for r in rows:
        assert "error" not in r and r["transductive"] is False and r["kd_weight"] == 1.0
        for who in ("teacher", "student"):
            assert set(r[who]) == {"base", "novel", "hm", "all"}
        assert (tmp_path / "grid" / f"promptsrc_{r['pool']}" / "config.yaml").is_file()
    # the teacher is the same in both runs, so its base/novel/HM are equal
    assert rows[0]["teacher"] == pytest.approx(rows[1]["teacher"])
    bad = run_promptkd_grid(cfg, tmp_path / "grid", pools=("reference",), teachers=("promptsrc",))
    assert "error" in bad[0] and "ArtifactError" in bad[0]["error"]  # the run directory is taken: refused, recorded
