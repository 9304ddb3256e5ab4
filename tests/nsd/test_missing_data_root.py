"""Issue 29 item 6: a dataset that cannot be read (missing ``data.root``, wrong layout) is refused by ``pand-train``
with exit 2 before anything is created: no run folder, no ``config.yaml``, no ``.pand.lock``, no ``runs/<name>``."""
import pytest

from pand.config import config_dir
from cli_refusal import refused_by_cli

TINY = str(config_dir() / "tiny.yaml")


@pytest.fixture(params=["missing", "no_train_folder"])
def bad_root(request, tmp_path):
    """A ``data.root`` that does not exist, or one without the ImageFolder layout (no ``train/``)."""
    root = tmp_path / "images"
    if request.param == "no_train_folder":
        (root / "test" / "cat").mkdir(parents=True)
    return root, request.param


def test_explicit_run_dir_is_not_created(bad_root, tmp_path, capsys, monkeypatch):
    root, kind = bad_root
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "r"
    err = refused_by_cli([TINY, "data=imagefolder", f"data.root={root}", "--run-dir", str(run_dir)], capsys)
    assert "data.root" in err and str(root) in err
    assert ("Point data.root at" in err) if kind == "missing" else ("missing train" in err)
    assert not run_dir.exists()
    assert not (tmp_path / "runs").exists()


def test_auto_run_dir_is_not_created_nor_consumed(bad_root, tmp_path, capsys, monkeypatch):
    root, _ = bad_root
    monkeypatch.chdir(tmp_path)
    err = refused_by_cli([TINY, "data=imagefolder", f"data.root={root}"], capsys)
    assert "data.root" in err and str(root) in err
    assert not (tmp_path / "runs").exists(), sorted(p.name for p in (tmp_path / "runs").rglob("*"))


def test_unlabeled_folder_is_checked_before_the_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = refused_by_cli([TINY, f"data.unlabeled={tmp_path / 'nope'}", "--run-dir", str(tmp_path / "r")], capsys)
    assert "data.unlabeled" in err
    assert not (tmp_path / "r").exists()
