"""Issue 20 (training side): overwrite refusal for every stage, the run-directory lock, class-name checks of a PSC
artifact, and clear errors for unwritable/full disks and unreadable or unsafe weight files."""
import errno
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from pand.config import config_dir, load_config
from pand.errors import ArtifactError, PandError
from pand.engine.checkpoint import load_last_checkpoint, save_checkpoint
from pand.psc.anchors import load_anchors, save_anchors
from pand.train import run
from pand.utils.io import WriteError, atomic_path, atomic_write_text
from pand.utils.lock import LOCK_NAME, LockedError, exclusive_lock

TINY = str(config_dir() / "tiny.yaml")


def _rewrite_in_place(path):
    """Other pixels in the same file (the caches and the PSC hash are keyed on content, not on mtime)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        other = ImageOps.invert(im.convert("RGB"))
    other.save(path, format="PNG")


@pytest.fixture(scope="module")
def finished(small, tmp_path_factory):
    """A finished run (both stages) with psc.n_ctx=4."""
    run_dir = tmp_path_factory.mktemp("finished")
    run(load_config(TINY, ["recipe=pand", *small]), run_dir)
    return run_dir


def _mtimes(run_dir):
    return {p: (run_dir / p).stat().st_mtime_ns for p in
            ("config.yaml", "psc/learned_text_features.safetensors", "student.safetensors")}


def test_stage_psc_into_a_finished_run_is_refused_and_resume_names_the_right_values(finished, small):
    before = _mtimes(finished)
    other = load_config(TINY, ["recipe=pand", *small, "psc.n_ctx=8"])
    with pytest.raises(ArtifactError, match="already holds a trained run"):
        run(other, finished, stage="psc")
    assert _mtimes(finished) == before  # neither config.yaml nor the anchors were replaced
    # a config.yaml that disagrees with the checkpoint (as the old --stage psc left it) does not mislead --resume:
    # the check reads what the checkpoint was trained with
    text = (finished / "config.yaml").read_text()
    atomic_write_text(finished / "config.yaml", text.replace("n_ctx: 4", "n_ctx: 8"))
    try:
        with pytest.raises(ArtifactError, match=r"psc.n_ctx: checkpoint=4 now=8"):
            run(other, finished, resume=True)
    finally:
        atomic_write_text(finished / "config.yaml", text)


def test_psc_artifact_with_other_class_names_is_refused(finished, small, tmp_path):
    artifact = finished / "psc" / "learned_text_features.safetensors"
    names = [f"bird species {i}" for i in range(24)]  # same class count, another dataset's classes
    cfg = load_config(TINY, ["recipe=pand", *small, f"psc.artifact={artifact}", f"data.class_names={names}"])
    with pytest.raises(ArtifactError, match=r"other classes than this dataset's .*label 0: file="):
        run(cfg, tmp_path / "other", stage="nsd")
    assert not (tmp_path / "other" / "nsd").exists()


def test_load_anchors_compares_stored_class_names(tmp_path):
    path = save_anchors(tmp_path / "a.safetensors", torch.randn(3, 4), None, {"class_names": ["a", "b", "c"]})
    load_anchors(path, 3, class_names=["a", "b", "c"])
    with pytest.raises(ArtifactError, match="label 1: file='b' dataset='x'"):
        load_anchors(path, 3, class_names=["a", "x", "c"])


def test_second_process_is_refused_naming_the_holder_pid(small, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pand.utils.lock import exclusive_lock\n"
        f"with exclusive_lock({str(run_dir / LOCK_NAME)!r}, 'x', 'y'):\n"
        "    print('locked', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = load_config(TINY, ["recipe=pand", *small])
        with pytest.raises(LockedError, match=rf"run directory .* in use by process {holder.pid} "):
            run(cfg, run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: a stale lock file never blocks
    with exclusive_lock(run_dir / LOCK_NAME, "run directory", "wait"):
        assert (run_dir / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with exclusive_lock(tmp_path / "l", "cache entry e", "wait"):
        with pytest.raises(LockedError, match=rf"cache entry e is in use by process {os.getpid()}"):
            with exclusive_lock(tmp_path / "l", "cache entry e", "wait"):
                pass
    with exclusive_lock(tmp_path / "l", "cache entry e", "wait"):
        pass


def test_unwritable_run_dir_is_a_pand_error(small, tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, *a, **k):
        if str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("pand.utils.lock.os.open", read_only)
    with pytest.raises(PandError, match=rf"cannot write to {tmp_path / 'ro'} \(Read-only file system\)"):
        run(load_config(TINY, ["recipe=pand", *small]), tmp_path / "ro")


def test_full_disk_is_a_write_error_and_leaves_no_temp_file(tmp_path):
    (tmp_path / "f.txt").write_text("old")
    with pytest.raises(WriteError, match=r"could not write .*f.txt: the disk is full"):
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"] and (tmp_path / "f.txt").read_text() == "old"


def test_checkpoint_on_a_full_disk_removes_its_staging_dir(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    t = {"student.w": torch.zeros(2)}
    save_checkpoint(root, 0, t, {"epoch": 0}, {"a": 1}, 0)

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed ... basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError, match="the disk is full"):
        save_checkpoint(root, 1, t, {"epoch": 1}, {"a": 1}, 1)
    assert sorted(p.name for p in root.iterdir()) == ["epoch_0000", "last.json"]
    assert json.loads((root / "last.json").read_text())["epoch"] == 0


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_empty_and_malicious_weight_files_are_pand_errors_without_unsafe_hints(tmp_path):
    from pand.models.students import create_student

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    for bad in (empty, evil):
        with pytest.raises(ArtifactError) as e:
            load_anchors(bad, None)
        assert str(bad) in str(e.value) and "weights_only=False" not in str(e.value)
        with pytest.raises(ArtifactError) as e:
            create_student("resnet18", 3, weights=str(bad))
        assert str(bad) in str(e.value) and "weights_only=False" not in str(e.value)
    # a malicious state.pt in a checkpoint
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 0, {"student.w": torch.zeros(2)}, {"epoch": 0}, {"a": 1}, 0)
    torch.save({"x": _Evil()}, root / "epoch_0000" / "state.pt")  # torch.save pickles the object's __reduce__
    with pytest.raises(ArtifactError) as e:
        load_last_checkpoint(root)
    assert "state.pt" in str(e.value) and "weights_only=False" not in str(e.value)


def test_skip_corrupt_drops_the_same_images_in_training_evaluation_and_export(small, tmp_path):
    from pand_export.data import load_split_images
    from pand.data import build_splits

    cfg = load_config(TINY, ["recipe=ce", *small, f"cache_dir={tmp_path / 'cache'}", "data.skip_corrupt=true"])
    splits = build_splits(cfg.data, cache_dir=cfg.cache_dir)  # generates the synthetic images, all readable
    n_test = len(splits.test)
    bad = splits.test.samples[3][0]
    open(bad, "wb").write(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="test: dropped 1 of"):
        summary = run(cfg, tmp_path / "run")
    assert summary["test_images"] == n_test - 1 and summary["skipped_images"] == {"test": 1}
    with pytest.warns(UserWarning, match="dropped 1"):
        images = load_split_images(cfg, "test", 0, 0, splits.class_names)
    assert len(images.paths) == n_test - 1 and bad not in images.paths


def test_safetensors_write_failure_is_a_write_error(tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    from pand.utils.io import save_tensors

    def full(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(WriteError, match=r"could not write .*student.safetensors"):
        save_tensors(tmp_path / "student.safetensors", {"w": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_resume_never_retrains_psc_under_a_trained_student(small, tmp_path):
    from pand.data import build_splits

    cfg = load_config(TINY, ["recipe=pand", *small, f"cache_dir={tmp_path / 'cache'}"])
    run(cfg, tmp_path / "run")
    artifact = tmp_path / "run" / "psc" / "learned_text_features.safetensors"
    before = artifact.stat().st_mtime_ns
    # as if interrupted after the last NSD checkpoint (a finished run is not resumed at all: tests/test_own_data_doc.py)
    (tmp_path / "run" / "summary.json").unlink()
    run(cfg, tmp_path / "run", resume=True)  # same inputs: the artifact is reused
    (tmp_path / "run" / "summary.json").unlink()
    assert artifact.stat().st_mtime_ns == before
    img = build_splits(cfg.data, cache_dir=cfg.cache_dir).train.samples[0][0]
    _rewrite_in_place(img)  # a train image rewritten in place
    with pytest.raises(ArtifactError, match="no longer matches this run's inputs"):
        run(cfg, tmp_path / "run", resume=True)
    assert artifact.stat().st_mtime_ns == before


def test_resume_keeps_an_artifact_written_before_fingerprints(small, tmp_path, monkeypatch):
    """A run started before file fingerprints entered the PSC hash still resumes (its artifact is not retrained)."""
    import pand.psc.stage as psc_stage
    from pand.utils.io import load_tensors

    cfg = load_config(TINY, ["recipe=pand", *small, f"cache_dir={tmp_path / 'cache'}"])
    real, seen = psc_stage.psc_config_hash, []
    monkeypatch.setattr(psc_stage, "psc_config_hash", lambda c, parts: seen.append(dict(parts)) or real(c, parts))
    run(cfg, tmp_path / "run")
    monkeypatch.setattr(psc_stage, "psc_config_hash", real)
    artifact = tmp_path / "run" / "psc" / "learned_text_features.safetensors"
    t, meta = load_tensors(artifact)
    meta["config_hash"] = real(cfg.psc, {k: v for k, v in seen[0].items() if k != "content"})  # the old hash
    save_anchors(artifact, t["text_features"], t.get("ctx"), meta)
    before = artifact.stat().st_mtime_ns
    (tmp_path / "run" / "summary.json").unlink()  # as if interrupted after the last NSD checkpoint
    with pytest.warns(UserWarning, match="predates image fingerprints"):
        run(cfg, tmp_path / "run", resume=True)
    assert artifact.stat().st_mtime_ns == before
