"""Stage NSD under torchrun: 2 gloo processes on CPU against one process (same global batch)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pand.config import config_dir, load_config
from pand.train import run

TINY = str(config_dir() / "tiny.yaml")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ddp
def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    args = [
        "recipe=pand", f"cache_dir={tmp_path / 'cache'}", "trainer.tensorboard=false",
        "data.synthetic.train_per_class=6", "data.synthetic.test_per_class=3", "data.synthetic.image_size=32", "student.image_size=32",
        "student.resize_size=36", "psc.epochs=1", "nsd.epochs=1", "nsd.batch_size=16",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "pand.cli", TINY, *args, "trainer.devices=2",
                           "--run-dir", str(tmp_path / "ddp")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = run(load_config(TINY, args), tmp_path / "single")
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["test_images"] == single["test_images"] == 72  # exact, no padded duplicates
    assert abs(ddp["val_top1"] - single["val_top1"]) <= 0.1
    assert abs(ddp["final_losses"]["ce"] - single["final_losses"]["ce"]) <= 0.1 * single["final_losses"]["ce"]
    recs = [json.loads(line) for line in (tmp_path / "ddp" / "nsd" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [0]  # one writer
    assert sum(r["kind"] == "test" for r in recs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ddp", "single"]
