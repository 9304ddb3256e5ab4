"""What pand-train reports (issue #29 items 1 and 6), on its parts: the epoch line and final block (1-based epochs
printed, 0-based stored), curves.png from metrics records, the finished-run check, run-directory numbering, and the
warning for a CE ramp that never trains on labels."""
import json
import logging

import pytest
from omegaconf import OmegaConf

from pand import report
from pand.cli import resolve_run_dir
from pand.nsd.criterion import NSDCriterion


def test_epoch_line_is_one_based_and_names_the_best_epoch():
    line = report.epoch_line(0, 10, {"loss": 1.23456, "lr": 1e-4, "images_per_s": 412.4}, {"top1": 0.6125},
                             0.6125, 0)
    assert line == "epoch 1/10  loss 1.2346  val top-1 61.25% (best 61.25% @ epoch 1)  lr 1.00e-04  412 img/s"
    assert report.epoch_line(4, 10, {"loss": 1.0, "lr": 1e-3, "images_per_s": 9}, None, -1.0, -1).startswith(
        "epoch 5/10  loss 1.0000  val -")


def test_final_block_has_best_epoch_accuracies_time_and_every_path(tmp_path):
    summary = {"recipe": "ce", "data": "imagefolder", "student": "resnet18", "val_top1": 0.5, "test_top1": 0.25,
               "test_images": 12, "best_epoch": 1, "epochs": 3, "wall_time_s": 12.34, "train_time_s": 10.0,
               "images_per_s": 99.6}
    lines = report.final_lines(summary, tmp_path, {"student": tmp_path / "student.safetensors"},
                               extra=["gain over ce: +1.0 points"])
    text = "\n".join(lines)
    assert "finished ce on imagefolder (resnet18) in 12.3 s (training 10.0 s, 100 img/s)" in text
    assert "best epoch:  2 of 3 (files store it 0-based: best_epoch=1)" in text
    assert "val top-1:   50.00%" in text and "test top-1:  25.00% on all 12 test images" in text
    assert f"student: {tmp_path / 'student.safetensors'}" in text and "gain over ce: +1.0 points" in text
    assert lines[-1] == f"  next: pand-export {tmp_path}"


def test_logger_echoes_to_stdout(capsys):
    report.setup_logging()
    report.setup_logging()  # once
    report.log.info("hello")
    assert capsys.readouterr().out == "hello\n"
    assert sum(isinstance(h, report._EchoHandler) for h in report.log.handlers) == 1, report.log.handlers


def test_curves_png_from_metrics_records(tmp_path):
    recs = [{"kind": "step", "epoch": 0, "loss": 3.0},
            *({"kind": "epoch", "epoch": e, "loss": 2.0 - e, "ce": 1.0, "kl": 0.5, "w_ce": 0.1, "coef_l1": 0.4,
               "lr": 1e-3 / (e + 1), "images_per_s": 10.0, "steps": 3, "val_top1": 0.1 * e} for e in range(3))]
    assert report._term_keys(recs[1]) == ["loss", "ce", "kl"]
    out = report.write_curves(recs, tmp_path / "curves.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.write_curves(recs[:1], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_finished_run_needs_summary_and_student_and_a_finished_state(tmp_path):
    assert report.finished_run(tmp_path) is None
    (tmp_path / "student.safetensors").write_bytes(b"x")
    assert report.finished_run(tmp_path) is None
    (tmp_path / "summary.json").write_text(json.dumps({"test_top1": 0.5}))
    assert report.finished_run(tmp_path) == {"test_top1": 0.5}
    (tmp_path / "run.json").write_text(json.dumps({"state": "running"}))
    assert report.finished_run(tmp_path) is None
    (tmp_path / "run.json").write_text(json.dumps({"state": "finished"}))
    assert report.finished_run(tmp_path) == {"test_top1": 0.5}


def test_run_directories_are_numbered_unless_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"name": "tiny", "run_dir": None})
    assert resolve_run_dir(cfg, None) == tmp_path.joinpath("runs/tiny").relative_to(tmp_path)
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    assert str(resolve_run_dir(cfg, None)) == "runs/tiny"  # empty: still free
    (tmp_path / "runs" / "tiny" / "config.yaml").write_text("x")
    assert str(resolve_run_dir(cfg, None)) == "runs/tiny-2"
    assert str(resolve_run_dir(cfg, None, resume=True)) == "runs/tiny"
    (tmp_path / "runs" / "tiny-2").mkdir()
    (tmp_path / "runs" / "tiny-2" / "config.yaml").write_text("x")
    assert str(resolve_run_dir(cfg, None)) == "runs/tiny-3"
    assert str(resolve_run_dir(cfg, None, resume=True)) == "runs/tiny-2"
    assert str(resolve_run_dir(cfg, "runs/tiny")) == "runs/tiny"  # --run-dir: as given
    assert str(resolve_run_dir(OmegaConf.create({"name": "tiny", "run_dir": "x/y"}), None)) == "x/y"


@pytest.mark.parametrize("epochs, ce_weight, warns", [(1, None, True), (2, None, False), (1, 0.5, False)])
def test_a_ce_ramp_that_never_sees_a_label_is_warned_with_the_fix(epochs, ce_weight, warns):
    msg = NSDCriterion(epochs=epochs, ce_weight=ce_weight).label_free_warning()
    assert (msg is not None) is warns
    if warns:
        assert "nsd.epochs=1" in msg and "nsd.epochs >= 2" in msg and "nsd.ce_weight=0.5" in msg
    assert NSDCriterion(epochs=1, use_teacher=False).label_free_warning() is None


def test_every_option_of_every_command_has_help():
    from pand.cli import cli as train
    from pand_export.cli import cli as export
    from pand_runtime.engine import _cli as engine

    from pand_runtime.bench import _cli

    for cmd in (train, export, engine(), _cli()):
        missing = [p.name for p in cmd.params if p.param_type_name == "option" and not getattr(p, "help", None)]
        assert not missing, (cmd.name, missing)
