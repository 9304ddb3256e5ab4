"""Export from anywhere (issue #29 item 3): fp32 without the dataset (parity on random images, said so), int8 without
it names --data-root, an unfinished run names --resume and its last checkpoint, which exports as it is, and
--calib-images DIR; the TensorRT hint fits the bundle (item 5)."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle_factory as bf  # noqa: E402

from pand.errors import PandError  # noqa: E402
from pand_runtime.manifest import load_manifest  # noqa: E402


def test_fp32_export_needs_no_dataset_and_says_so(run_dir, tmp_path, caplog):
    bare = tmp_path / "elsewhere" / "student.safetensors"  # no config.yaml anywhere near: no dataset known
    bare.parent.mkdir()
    shutil.copy(run_dir / "student.safetensors", bare)
    with caplog.at_level("WARNING", logger="pand.export"):
        res = bf.export(bare, tmp_path / "fp32", precision="fp32", parity_images=8)
    assert res.valid
    m = load_manifest(res.bundle)
    assert m.parity["split"] == "random" and m.parity["n_images"] == 8 and m.parity["reference_accuracy"] is None
    assert "random images" in m.parity["inputs"]
    assert any("random images instead" in r.getMessage() and "--data-root" in r.getMessage() for r in caplog.records)
    # pand-bench: agreement on those images, no top-1, and it says which images
    from pand_runtime.bench import bench_bundle
    from pand_runtime.bench_report import render_text
    from pand_runtime.bench_rows import BenchOptions

    rows = bench_bundle(res.bundle, BenchOptions(iterations=2, min_time=0, warmup_ms=0, threads=1))
    assert rows[0].status == "ok", rows[0].reason
    assert rows[0].agreement == 1.0 and rows[0].top1 is None
    assert "8 random parity images" in rows[0].agreement_source
    assert "agree % / max abs diff: vs the PyTorch logits stored in the bundle, on 8 random parity images" in \
        render_text(rows)
    # int8 is judged on real images: refused, naming --data-root
    with pytest.raises(PandError, match="--data-root"):
        bf.export(bare, tmp_path / "int8", precision="int8", target="cpu")


def test_data_root_must_exist(run_dir, tmp_path):
    with pytest.raises(PandError, match="--data-root .* does not exist"):
        bf.export(run_dir, tmp_path / "x", precision="fp32", data_root=tmp_path / "nope")
    assert not (tmp_path / "x").exists()


def _unfinished(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of ``run_dir`` as an interrupted run leaves it: config.yaml and an NSD checkpoint, no student yet."""
    from pand.engine.checkpoint import save_checkpoint
    from pand.utils.io import load_tensors

    run = tmp_path / "unfinished"
    run.mkdir()
    shutil.copy(run_dir / "config.yaml", run / "config.yaml")
    tensors, _ = load_tensors(run_dir / "student.safetensors")
    save_checkpoint(run / "nsd" / "checkpoints", 1, {f"student.{k}": v for k, v in tensors.items()}, {"epoch": 1},
                    {"name": "tiny"}, best_epoch=1)
    return run


def test_an_unfinished_run_names_resume_and_its_checkpoint_which_exports(run_dir, tmp_path):
    run = _unfinished(run_dir, tmp_path)
    ckpt = run / "nsd" / "checkpoints" / "epoch_0001" / "model.safetensors"
    with pytest.raises(PandError) as err:
        bf.export(run, tmp_path / "b", precision="fp32")
    msg = str(err.value)
    assert "unfinished run" in msg and "--resume" in msg and str(ckpt) in msg and "from epoch 2" in msg
    res = bf.export(ckpt, tmp_path / "from-ckpt", precision="fp32", parity_images=8)  # class names: the dataset's
    m = load_manifest(res.bundle)
    assert res.valid and m.source["run_dir"] == str(run) and m.class_names == load_manifest(
        bf.export(run_dir, tmp_path / "ref", precision="fp32", parity_images=8).bundle).class_names


def test_calibration_from_a_folder(run_dir, tmp_path):
    calib = tmp_path / "calib" / "nested"
    calib.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(5):
        Image.fromarray(rng.integers(0, 256, (70, 80, 3), dtype=np.uint8)).save(calib / f"{k}.png")
    res = bf.export(run_dir, tmp_path / "int8", precision="int8", target="cpu", parity_images=8,
                    calib_images=tmp_path / "calib", accuracy_aware=False, min_agreement=0.0, max_acc_drop=1.0)
    info = load_manifest(res.bundle).models[0].info["int8"]
    assert info["calibration_images"] == 5 and info["calibration_split"] == f"folder {tmp_path / 'calib'}"


def test_cli_calib_images_takes_a_number_or_a_folder_and_the_hint_fits_the_bundle(run_dir, tmp_path):
    from click.testing import CliRunner

    from pand_export.cli import cli

    r = CliRunner().invoke(cli, [str(run_dir), "--calib-images", str(tmp_path / "missing"), "-o", str(tmp_path / "b")])
    assert r.exit_code == 2 and "give a number of training images or an existing folder" in r.output, r.output
    r = CliRunner().invoke(cli, [str(run_dir), "--precision", "int8", "--target", "cpu", "--plain-int8",
                                 "--calib-images", "8", "--parity-images", "8", "--min-agreement", "0",
                                 "--max-acc-drop", "1", "-o", str(tmp_path / "int8")])
    assert r.exit_code == 0, r.output
    assert "run pand-engine" not in r.output  # pand-engine refuses a cpu-flavour int8 bundle
    assert "--target tensorrt" in r.output
    assert json.loads((tmp_path / "int8" / "manifest.json").read_text())["int8_target"] == "cpu"
