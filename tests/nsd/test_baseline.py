"""pand-train --baseline ce: the CE student on the same labelled images and step budget, and the reported gain."""
import json

from click.testing import CliRunner

from pand.baseline import baseline_config
from pand.engine.loaders import steps_per_epoch
from pand.cli import cli
from pand.config import config_dir, load_config


def test_baseline_config_is_ce_on_the_labels_with_the_same_step_budget():
    cfg = load_config(config_dir() / "demo.yaml", ["recipe=pand", "data.unlabeled=rest", "nsd.epochs=12"])
    b = baseline_config(cfg, n_labeled=240, n_unlabeled=480)
    assert b.recipe.name == "ce" and not b.recipe.use_teacher and not b.psc.enabled and b.data.unlabeled is None
    assert 12 * steps_per_epoch(240, 480, 16) == b.nsd.epochs * steps_per_epoch(240, 0, 16)  # 12 x 45 = 36 x 15
    for key in ("lr", "optimizer", "scheduler", "weight_decay", "batch_size"):
        assert b.nsd[key] == cfg.nsd[key]
    assert b.trainer.seed == cfg.trainer.seed and b.student == cfg.student
    plain = load_config(config_dir() / "demo.yaml", ["recipe=vl2lite"])
    assert baseline_config(plain, 240, 0).nsd.epochs == plain.nsd.epochs


def test_baseline_ce_is_refused_for_a_recipe_without_teacher(tmp_path):
    r = CliRunner().invoke(cli, [str(config_dir() / "tiny.yaml"), "recipe=ce", "--baseline", "ce",
                                 "--run-dir", str(tmp_path / "r")])
    assert r.exit_code == 2 and "nothing to compare" in r.output and not (tmp_path / "r").exists()


def test_pand_train_baseline_ce_reports_the_gain(small, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, [str(config_dir() / "tiny.yaml"), *small, "recipe=vl2lite", "--baseline", "ce",
                                 "--run-dir", str(run)])
    assert r.exit_code == 0, r.output
    s = json.loads((run / "summary.json").read_text())
    base = json.loads((run / "baseline_ce" / "summary.json").read_text())
    assert base["recipe"] == "ce" and s["recipe"] == "vl2lite"
    b = s["baseline"]
    assert b["val_top1"] == base["val_top1"] and b["test_top1"] == base["test_top1"]
    assert b["gain_val_points"] == round(100 * (s["val_top1"] - base["val_top1"]), 2)
    assert f"{b['gain_val_points']:+.1f} points on validation" in r.output


def test_resume_of_a_finished_run_with_its_baseline_changes_no_file(small, tmp_path):
    import hashlib

    run = tmp_path / "run"
    args = [str(config_dir() / "tiny.yaml"), *small, "recipe=vl2lite", "--baseline", "ce", "--run-dir", str(run)]
    assert CliRunner().invoke(cli, args).exit_code == 0

    def digests():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}

    before = digests()
    r = CliRunner().invoke(cli, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert digests() == before and "points on validation" in r.output
