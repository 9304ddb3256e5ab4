"""``pand-train ... --dry-run`` prints the true class and split counts of a dataset."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pand.cli import cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_tiny_dry_run_counts(tmp_path):
    res = _run(CONFIGS / "tiny.yaml", "--dry-run", f"cache_dir={tmp_path}")
    assert res.exit_code == 0, res.output
    # tiny.yaml: 24 classes x 12 train images, val_fraction 0.25 -> 3 per class; 6 test images per class
    assert "classes: 24" in res.output
    assert "train: 216 images" in res.output and "val: 72 images" in res.output and "test: 144 images" in res.output
    assert "base/novel classes: 12/12" in res.output
    assert "red plain hooked-beak bird" in res.output
    assert (tmp_path / "synthetic").is_dir()


def test_cub_fixture_dry_run_counts(cub_root):
    root, exp = cub_root
    res = _run(CONFIGS / "tiny.yaml", "data=cub_200_2011", f"data.root={root}", "data.val_fraction=0.34", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "dataset: cub_200_2011" in res.output and "classes: 3" in res.output
    assert "train: 12 images" in res.output and "val: 6 images" in res.output and "test: 9 images" in res.output
    assert "first classes: Black footed Albatross, Laysan Albatross, Sooty Albatross" in res.output


def test_missing_root_is_a_clean_error(tmp_path):
    res = CliRunner().invoke(cli, [str(CONFIGS / "tiny.yaml"), "data=cub_200_2011", "--dry-run"])
    assert res.exit_code == 2
    assert "data.root is not set" in res.output and "images.txt" in res.output
    assert "Traceback" not in res.output
