"""Transductive pool (opt-in): the pool takes the test images and every class; the summaries say so in capitals.

Set here through the deprecated ``promptkd.regime`` key, which must keep working as ``promptkd.pool``."""
from __future__ import annotations

import json

from pand.config import load_config


def test_transductive_run_is_labelled_in_capitals(tmp_path):
    from pand.data import build_splits
    from pand.promptkd import TRANSDUCTIVE_NOTE, run

    cfg = load_config("configs/tiny.yaml", [
        "recipe=promptkd", "promptkd.teacher_prompts=handcrafted", f"cache_dir={tmp_path / 'cache'}",
        "data.synthetic.train_per_class=4", "data.synthetic.test_per_class=2", "promptkd.epochs=1",
        "promptkd.regime=transductive",
    ])
    s = run(cfg, tmp_path / "run", progress=False)
    splits = build_splits(cfg.data, cache_dir=cfg.cache_dir)
    assert s["regime"] == s["pool_mode"] == "transductive" and s["protocol"] == TRANSDUCTIVE_NOTE
    assert s["pool"]["mode"] == "transductive" and s["pool"]["transductive"] is True
    assert "TRANSDUCTIVE" in TRANSDUCTIVE_NOTE and "TEST IMAGES" in TRANSDUCTIVE_NOTE
    assert s["pool"]["test_images"] == len(splits.test) == 24 * 2
    assert s["pool"]["images"] == len(splits.train) + len(splits.test)
    assert s["classes"]["in_training_logits"] == 24
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["protocol"] == TRANSDUCTIVE_NOTE
    from pand.utils.io import load_tensors

    assert load_tensors(tmp_path / "run" / "student.safetensors")[1]["regime"] == "transductive"
