"""pand-export never deletes what is not provably its own bundle, and a failed export leaves nothing behind (issue #20
items 1 and 13): --output replacement rules, a NaN checkpoint, a full disk, a failed final rename."""
import errno
import json
import shutil

import pytest
from click.testing import CliRunner

from pand_export import ExportOptions, export_bundle
from pand_export.cli import cli
from pand.errors import PandError
from pand.utils.io import load_tensors, save_tensors
from pand_runtime import load_manifest


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_folder_with_an_unrelated_manifest_json_is_never_replaced(run_dir, tmp_path):
    src = tmp_path / "webapp"
    (src / "src").mkdir(parents=True)
    (src / "manifest.json").write_text(json.dumps({"name": "my-app", "version": "1.0"}))
    (src / "src" / "main.py").write_text("print('keep me')\n")
    before = _tree(src)
    r = CliRunner().invoke(cli, [str(run_dir), "--output", str(src), "--parity-images", "4"])
    assert r.exit_code == 2, r.output
    assert "is not a pand bundle manifest" in r.output and "choose another --output" in r.output
    assert _tree(src) == before and (src / "src" / "main.py").read_text() == "print('keep me')\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["webapp"]  # no staging directory left


def test_bundle_holding_files_its_manifest_does_not_list_is_not_replaced(fp32_bundle, run_dir, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(fp32_bundle.bundle, out)
    (out / "notes.txt").write_text("mine")
    (out / "data").mkdir()
    with pytest.raises(PandError, match="also holds data, notes.txt, which its manifest does not list"):
        export_bundle(run_dir, ExportOptions(output=out, parity_images=4))
    assert (out / "notes.txt").read_text() == "mine" and (out / "data").is_dir()
    (out / "notes.txt").unlink()
    (out / "data").rmdir()
    res = export_bundle(run_dir, ExportOptions(output=out, parity_images=4))  # a clean earlier bundle is replaced
    assert res.valid and load_manifest(out).parity["n_images"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_files_added_to_the_old_bundle_during_an_export_are_kept(fp32_bundle, run_dir, tmp_path, monkeypatch):
    import pand_export.exporter as ex

    out = tmp_path / "bundle"
    shutil.copytree(fp32_bundle.bundle, out)
    real = ex._write_bundle_files

    def write_then_user_adds_a_file(ctx, *a, **kw):
        m = real(ctx, *a, **kw)
        (out / "added-meanwhile.txt").write_text("mine")
        return m

    monkeypatch.setattr(ex, "_write_bundle_files", write_then_user_adds_a_file)
    with pytest.raises(PandError, match="added-meanwhile.txt, which its manifest does not list"):
        export_bundle(run_dir, ExportOptions(output=out, parity_images=4))
    assert (out / "added-meanwhile.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_nan_checkpoint_is_refused_before_anything_is_written(run_dir, tmp_path):
    bad = tmp_path / "run"
    bad.mkdir()
    shutil.copy(run_dir / "config.yaml", bad / "config.yaml")
    tensors, meta = load_tensors(run_dir / "student.safetensors")
    tensors["linear_cls.weight"] = tensors["linear_cls.weight"].clone()
    tensors["linear_cls.weight"][0, 0] = float("nan")
    save_tensors(bad / "student.safetensors", tensors, meta)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, [str(bad), "--output", str(out), "--precision", "int8", "--target", "cpu",
                                 "--calib-images", "8", "--parity-images", "4"])
    assert r.exit_code == 2, r.output
    assert "student.safetensors holds NaN or inf weights" in r.output and "linear_cls.weight" in r.output
    assert "retrain" in r.output and "Traceback" not in r.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_non_finite_torch_logits_are_refused(run_dir, tmp_path, monkeypatch):
    import pand_export.exporter as ex

    real = ex._reference

    def overflowing(src, images):
        x, logits, crops, diff = real(src, images)
        logits[0, 0] = float("inf")
        return x, logits, crops, diff

    monkeypatch.setattr(ex, "_reference", overflowing)
    with pytest.raises(PandError, match="returns NaN or inf logits on the parity images; nothing was written"):
        export_bundle(run_dir, ExportOptions(output=tmp_path / "out", parity_images=4))
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_writing_is_a_clear_error_and_leaves_nothing(fp32_bundle, run_dir, tmp_path, monkeypatch):
    import pand_export.exporter as ex

    out = tmp_path / "bundle"
    shutil.copytree(fp32_bundle.bundle, out)
    before = (out / "manifest.json").read_text()

    def disk_full(ctx, *a, **kw):
        (ctx.staging / "reference.npz").write_bytes(b"x" * 1000)  # a partial file in the staging directory
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ex, "_write_bundle_files", disk_full)
    r = CliRunner().invoke(cli, [str(run_dir), "--output", str(out), "--parity-images", "4"])
    assert r.exit_code == 2, r.output
    assert f"cannot write the bundle {out}" in r.output and "No space left on device" in r.output
    assert "free disk space" in r.output
    assert (out / "manifest.json").read_text() == before  # the earlier bundle is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging directory left behind


def test_failed_final_rename_puts_the_old_bundle_back(fp32_bundle, tmp_path):
    from pand_runtime.manifest import publish_bundle

    out = tmp_path / "bundle"
    shutil.copytree(fp32_bundle.bundle, out)
    with pytest.raises(OSError):
        publish_bundle(tmp_path / "vanished-staging", out)
    assert load_manifest(out).valid and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_check_replaceable_rules(fp32_bundle, tmp_path):
    from pand_export.exporter import check_replaceable

    check_replaceable(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PandError, match="is not a directory"):
        check_replaceable(tmp_path / "file")
    b = tmp_path / "b"
    shutil.copytree(fp32_bundle.bundle, b)
    check_replaceable(b)
    (b / "reference.npz").unlink()
    (b / "reference.npz").symlink_to(fp32_bundle.bundle / "reference.npz")
    with pytest.raises(PandError, match="also holds reference.npz"):
        check_replaceable(b)
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(PandError, match="not a pand bundle manifest"):
        check_replaceable(b)
