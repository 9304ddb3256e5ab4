"""run_psc on configs/tiny.yaml through the real data layer (synthetic benchmark, tiny open_clip teacher, CPU)."""
from __future__ import annotations

import json
import time

import pytest

from pand.utils.io import read_json

data = pytest.importorskip("pand.data")
if not hasattr(data, "build_splits"):  # pragma: no cover - data layer not there yet
    pytest.skip("pand.data.build_splits not available", allow_module_level=True)


def _run(tmp_path, *overrides):
    from pand.config import load_config
    from pand.psc import load_anchors, run_psc

    cfg = load_config("configs/tiny.yaml", [f"cache_dir={tmp_path / 'cache'}", "trainer.num_workers=0", *overrides])
    t0 = time.time()
    path = run_psc(cfg, tmp_path / "run", progress=False)
    seconds = time.time() - t0
    splits = data.build_splits(cfg.data, cache_dir=cfg.cache_dir)
    feats, meta = load_anchors(path, len(splits.class_names), embed_dim=64)
    return cfg, path, feats, meta, splits, seconds


def test_tiny_config_short(tmp_path):
    cfg, path, feats, meta, splits, _ = _run(tmp_path, "psc.epochs=3")
    assert feats.shape == (len(splits.class_names), 64) and len(splits.class_names) >= 24
    assert meta["class_names"] == splits.class_names
    assert meta["prompts"] == splits.prompts()
    summary = read_json(tmp_path / "run" / "psc" / "summary.json")
    assert summary["counts"]["val"] == len(splits.val) > 0 and summary["counts"]["test"] == len(splits.test)
    assert len((tmp_path / "run" / "psc" / "metrics.jsonl").read_text().splitlines()) == 3
    # same config again: the artifact is reused
    from pand.psc import run_psc

    mtime = path.stat().st_mtime_ns
    assert run_psc(cfg, tmp_path / "run", progress=False) == path and path.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_tiny_config_full_run(tmp_path):
    cfg, path, feats, meta, splits, seconds = _run(tmp_path)
    print(f"run_psc on configs/tiny.yaml took {seconds:.0f}s")  # speed is a benchmark's business, not a gate
    hist = [json.loads(x) for x in (tmp_path / "run" / "psc" / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == cfg.psc.epochs
    assert meta["val_acc"] == max(h["val_acc"] for h in hist)
