"""Issue 31, items 1-2 and 4: a run folder knows what it holds (run.json); pand-train refuses, exit 2 and nothing
written, a folder of another recipe, a finished run without --resume and a folder that is not a run; a refused
--resume writes nothing (config.yaml included)."""
import json

import pytest

from pand.config import config_dir, load_config
from pand.errors import ArtifactError
from pand.train import run
from cli_refusal import refused_by_cli

TINY = str(config_dir() / "tiny.yaml")
RUN_FILE = "run.json"


def _rewrite_in_place(path):
    """Other pixels in the same file (the caches and the PSC hash are keyed on content, not on mtime)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        other = ImageOps.invert(im.convert("RGB"))
    other.save(path, format="PNG")


def _snapshot(folder):
    """Every file under ``folder``: (bytes, mtime_ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".pand.lock"}


@pytest.fixture(scope="module")
def pand_run(small, tmp_path_factory):
    """A finished PAND run (both stages)."""
    run_dir = tmp_path_factory.mktemp("pand_run")
    run(load_config(TINY, ["recipe=pand", *small]), run_dir)
    return run_dir


def test_a_finished_run_records_kind_state_and_versions(pand_run):
    record = json.loads((pand_run / RUN_FILE).read_text())
    assert record["kind"] == "pand" and record["state"] == "finished"
    assert record["stages_done"] == ["psc", "nsd"] and record["versions"]["pand"]


def test_promptkd_into_a_finished_pand_run_is_refused_and_writes_nothing(pand_run, small, capsys):
    before = _snapshot(pand_run)
    err = refused_by_cli([TINY, "recipe=promptkd", *small, "--run-dir", str(pand_run)], capsys)
    assert "recipe 'pand'" in err and "recipe 'promptkd'" in err
    assert _snapshot(pand_run) == before


def test_pand_into_a_promptkd_run_is_refused_for_every_stage(small, tmp_path, capsys):
    folder = tmp_path / "pk"
    folder.mkdir()
    (folder / "config.yaml").write_text("recipe:\n  name: promptkd\n")
    (folder / RUN_FILE).write_text(json.dumps({"format": "pand-run-v1", "kind": "promptkd", "state": "finished",
                                               "stage": "promptkd", "stages_done": ["promptkd"], "versions": {}}))
    before = _snapshot(folder)
    for stage in ("psc", "nsd", "all"):
        refused_by_cli([TINY, "recipe=pand", *small, "--stage", stage, "--run-dir", str(folder)], capsys)
        assert _snapshot(folder) == before


def test_a_folder_that_is_not_a_run_is_refused(small, tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("my: project\n")
    (project / "summary.json").write_text('{"mine": true}\n')
    before = _snapshot(project)
    err = refused_by_cli([TINY, "recipe=ce", *small, "--run-dir", str(project)], capsys)
    assert "not a pand run" in err and "config.yaml" in err
    assert _snapshot(project) == before and sorted(p.name for p in project.iterdir()) == ["config.yaml",
                                                                                          "summary.json"]


def test_check_run_folder_rules(tmp_path):
    from pand.engine.run_folder import check_run_folder

    assert check_run_folder(tmp_path / "new", "pand", "all", False).record is None
    with pytest.raises(ArtifactError, match="no run to resume"):
        check_run_folder(tmp_path / "new", "pand", "all", True)
    f = check_run_folder(tmp_path / "r", "pand", "psc", False)
    f.start()
    assert json.loads((tmp_path / "r" / RUN_FILE).read_text())["state"] == "running"
    f.finish(["psc"])  # a PSC-only run may be continued by --stage nsd without --resume
    check_run_folder(tmp_path / "r", "pand", "nsd", False).finish(["nsd"])
    with pytest.raises(ArtifactError, match="already holds a trained run"):
        check_run_folder(tmp_path / "r", "pand", "psc", False)
    check_run_folder(tmp_path / "r", "pand", "all", True)  # --resume of a finished run is allowed
    with pytest.raises(ArtifactError, match="recipe 'pand'"):
        check_run_folder(tmp_path / "r", "vl2lite", "all", True)


def test_a_refused_resume_writes_nothing_config_included(small, tmp_path):
    from pand.data import build_splits

    cfg = load_config(TINY, ["recipe=pand", *small, f"cache_dir={tmp_path / 'cache'}"])
    run(cfg, tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()  # an interrupted run (a finished one is left alone on --resume)
    img = build_splits(cfg.data, cache_dir=cfg.cache_dir).train.samples[0][0]
    _rewrite_in_place(img)  # a train image rewritten in place
    before = _snapshot(tmp_path / "run")
    # trainer.log_every may differ on resume; the refusal comes later (Stage PSC's inputs changed)
    with pytest.raises(ArtifactError, match="no longer matches"):
        run(load_config(TINY, ["recipe=pand", *small, f"cache_dir={tmp_path / 'cache'}", "trainer.log_every=7"]),
            tmp_path / "run", resume=True)
    assert _snapshot(tmp_path / "run") == before
