"""pand-sweep's refusals (before anything trains) and its reports, without training anything."""
import json

import pytest
from click.testing import CliRunner

from pand.config import config_dir
from pand.errors import ConfigError
from pand.models import students as st
from pand.sweep.cli import cli
from pand.sweep.plan import resolve_students
from pand.sweep.report import render_markdown, write_reports

TINY = str(config_dir() / "tiny.yaml")
SMALL = ["student.image_size=32", "student.resize_size=36", "data.synthetic.image_size=32"]


def _invoke(tmp_path, *args):
    return CliRunner().invoke(cli, [TINY, *SMALL, "--run-dir", str(tmp_path / "sweep"), *args])


def test_help_shows_an_example():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "pand-sweep configs/" in r.output
    assert "--budget-ms" in r.output and "VALIDATION" in r.output


def test_unknown_student_lists_the_registered_ones(tmp_path):
    r = _invoke(tmp_path, "--students", "resnet18,resnet9000")
    assert r.exit_code == 2 and "unknown student 'resnet9000'" in r.output
    for name in ("resnet18", "resnet34", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                 "efficientnet_b0"):
        assert name in r.output
    assert "Traceback" not in r.output and not (tmp_path / "sweep").exists()  # refused before anything is written


def test_student_whose_input_size_does_not_fit_names_both_sizes(tmp_path, monkeypatch):
    def big_student(pretrained=False):
        raise AssertionError("never built: refused before training")

    big_student.min_input_size = 64
    monkeypatch.setitem(st._STUDENTS, "big_student", big_student)
    r = _invoke(tmp_path, "--students", "resnet18,big_student")
    assert r.exit_code == 2 and "'big_student' needs inputs of at least 64 px" in r.output
    assert "32 px" in r.output and "student.image_size" in r.output and not (tmp_path / "sweep").exists()
    # 'all' skips it (and says so) instead of refusing
    said = []
    names = resolve_students("all", 32, say=said.append)
    assert "big_student" not in names and "resnet18" in names and any("big_student" in s for s in said)


def test_minimum_input_sizes_of_real_students():
    assert st.min_input_size("resnet18") == 1  # torchvision's metadata: any size
    assert st.min_input_size("timm/vit_tiny_patch16_224") == 224  # a fixed-size ViT
    with pytest.raises(ConfigError, match="at least 224 px.*32 px"):
        resolve_students("timm/vit_tiny_patch16_224", 32)
    with pytest.raises(ConfigError, match="timm has no model"):
        resolve_students("timm/not_a_model_xyz", 32)


def test_unknown_precision_and_bad_batches(tmp_path):
    r = _invoke(tmp_path, "--students", "resnet18", "--precisions", "fp32,int4")
    assert r.exit_code == 2 and "int4" in r.output and "fp32, fp16, int8" in r.output
    r = _invoke(tmp_path, "--students", "resnet18", "--batch", "8", "--max-batch", "4")
    assert r.exit_code == 2 and "--max-batch" in r.output


def _entry(student, precision, val, test, p50, pareto):
    return {"student": student, "precision": precision, "val_top1": val, "test_top1": test, "p50_ms": p50,
            "p99_ms": p50 * 1.2, "throughput": 1000 / p50, "parameters": 11_000_000, "flops": 2e9, "status": "ok",
            "valid": True, "reason": "", "pareto": pareto, "bundle": f"b/{student}-{precision}"}


def _payload(budget, chosen, fastest):
    entries = [_entry("resnet18", "fp32", 0.8, 0.7, 5.0, True), _entry("mobilenet_v3_small", "int8", 0.6, 0.65, 1.0,
                                                                         True)]
    return {"config": "c.yaml", "overrides": [], "image_size": 64, "format": "onnx", "device_key": "cpu-x",
            "latency_batch": 1, "throughput_batch": 32, "budget_ms": budget, "wall_s": 1.0, "entries": entries,
            "recommendation": {"budget_ms": budget, "met": chosen is not None,
                               "chosen": entries[chosen] if chosen is not None else None,
                               "fastest": entries[fastest]}}


def test_report_sorts_by_latency_marks_the_front_and_states_the_choice(tmp_path):
    md = render_markdown(_payload(2.0, 1, 1))
    rows = [line for line in md.splitlines() if line.startswith("| ") and "student" not in line]
    assert rows[0].startswith("| mobilenet_v3_small | int8 | 60.0 | 65.0 |") and rows[1].startswith("| resnet18")
    assert all(r.rstrip(" |").endswith("*") or "| * |" in r for r in rows)
    assert "Recommended under 2 ms" in md and "val top-1 60.0 (chosen on validation), test top-1 65.0" in md
    md = render_markdown(_payload(0.5, None, 1))
    assert "No bundle meets the budget" in md and "the fastest is mobilenet_v3_small int8 at 1.00 ms" in md
    write_reports(tmp_path, _payload(2.0, 1, 1))
    assert json.loads((tmp_path / "sweep.json").read_text())["budget_ms"] == 2.0
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_student_trained_with_other_anchors_is_trained_again(tmp_path):
    from pand.sweep.run import _check_anchor_record

    run, record = tmp_path / "students" / "resnet18", tmp_path / "students" / "resnet18.anchors.json"
    run.mkdir(parents=True)
    (run / "student.safetensors").write_bytes(b"x")
    _check_anchor_record(run, record, "aaa", say=lambda s: None)  # no record yet: an unknown run is not trusted
    assert not run.exists() and json.loads(record.read_text()) == {"anchors_sha256": "aaa"}
    run.mkdir()
    before = record.stat().st_mtime_ns
    _check_anchor_record(run, record, "aaa", say=lambda s: None)  # same anchors: kept, record untouched
    assert run.exists() and record.stat().st_mtime_ns == before
    said = []
    _check_anchor_record(run, record, "bbb", say=said.append)  # same path, other content: trained again
    assert not run.exists() and "anchors changed" in said[0]
    assert json.loads(record.read_text()) == {"anchors_sha256": "bbb"}


def test_export_arguments_per_precision(tmp_path):
    from pand.sweep.run import SweepOptions, export_args

    opts = SweepOptions(config="c.yaml", max_batch=8, calib_images=64, export_args=("--plain-int8",))
    fp32 = export_args(tmp_path / "run", tmp_path / "b", "fp32", "onnx", opts)
    assert fp32[:5] == [str(tmp_path / "run"), "--format", "onnx", "--precision", "fp32"]
    assert "--target" not in fp32 and fp32[-1] == "--plain-int8" and "8" in fp32
    int8 = export_args(tmp_path / "run", tmp_path / "b", "int8", "onnx", opts)
    assert int8[int8.index("--target") + 1] == "cpu" and int8[int8.index("--calib-images") + 1] == "64"
    trt = export_args(tmp_path / "run", tmp_path / "b", "int8", "trt", opts)
    assert trt[trt.index("--target") + 1] == "tensorrt"
