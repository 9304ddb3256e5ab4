"""``bench/gpu_check.sh --dry-run``: every step of the GPU check runs at toy sizes on the CPU and reports.

The dry run goes through the shell script (as ``make gpu-check`` would, minus the GPU machine's installs) and
writes the same JSON + markdown as a GPU run. Checked: every section is there and every row carries numbers (the
gpu-marked pytest run skips its tests on a CPU, so only its counts are checked). Speeds are not asserted.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_gpu_check_dry_run_writes_every_section_with_numbers(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rep = json.loads((out / "gpu_check.json").read_text())
    md = (out / "gpu_check.md").read_text()

    assert rep["format"] == "pand-gpu-check" and rep["dry_run"] is True
    assert rep["env"]["torch"] and rep["env"]["date_utc"]
    assert set(rep["stages"]) == {"tests", "nsd", "psc", "latency", "trt"}
    assert all(s["status"] == "ok" for s in rep["stages"].values()), rep["stages"]

    gpu, cpu = rep["tests"]["gpu"], rep["tests"]["cpu_fast"]
    assert gpu["status"] == "passed" and gpu["skipped"] >= 1 and gpu["failed"] == gpu["errors"] == 0
    assert cpu["status"] == "passed" and cpu["passed"] >= 1 and cpu["failed"] == cpu["errors"] == 0
    assert (out / gpu["log"]).is_file() and (out / cpu["log"]).is_file()

    nsd = rep["nsd"]["rows"]
    assert len(nsd) == 8 and {(r["precision"], r["channels_last"], r["compile"]) for r in nsd} == {
        (p_, cl, c) for p_ in ("fp32", "bf16") for cl in (False, True) for c in (False, True)}
    for r in nsd:
        assert r["status"] == "ok", r
        for mode in ("live", "cached"):
            assert all(_number(r[mode][k]) and r[mode][k] > 0
                       for k in ("wall_s", "steady_images_per_s", "effective_images_per_s", "train_images_per_s"))
        for k in ("cache_speedup", "live_vs_fp32_eager_live", "cached_vs_fp32_eager_live"):
            assert _number(r[k]["wall"]) and _number(r[k]["steady"])
    assert all(v and _number(v["wall"]) and _number(v["steady"]) for v in rep["nsd"]["summary"].values())
    assert all(_number(c["time_ratio"]) for c in rep["nsd"]["cost"].values())

    psc = rep["psc"]["rows"]
    assert {r["teacher_precision"] for r in psc} == {"fp32", "amp"}
    assert all(r["status"] == "ok" and r["extract_images_per_s"] > 0 and r["forward_images_per_s"] > 0 for r in psc)

    lat = rep["latency"]["rows"]
    assert {(r["mode"], r["precision"]) for r in lat} == {(m, p_) for m in ("eager", "compile")
                                                          for p_ in ("fp32", "fp16")}
    assert len({r["batch"] for r in lat}) == 2
    assert all(r["status"] == "ok" and 0 < r["p50_ms"] <= r["p99_ms"] and _number(r["images_per_s"]) for r in lat)

    for title in ("## Tests", "## Stage NSD throughput", "## Stage PSC feature extraction",
                  "## Student inference latency (PyTorch)"):
        assert title in md
    assert "bf16 +cl +compile" in md and "dry run" in md


def test_gpu_check_dry_run_lists_the_tensorrt_device_checks(tmp_path):
    """Stage trt on a CPU: every device check of bench/trt_check.py is listed, the CPU-side inputs are prepared (the
    INT32-bias Q/DQ model passes onnx.checker), and the probe says what is missing; the script exits 0."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--stages", "trt", "--out", str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rep = json.loads((out / "gpu_check.json").read_text())
    assert rep["stages"]["trt"]["status"] == "ok"
    rows = {r["check"]: r for r in rep["trt"]["rows"]}
    assert list(rows) == ["negative-control", "fp32-parity", "batches", "garbage-cache", "tampered-engine",
                          "threads", "cycles"]
    assert all(r["status"].startswith("listed (dry run") for r in rows.values()), rows
    assert rows["negative-control"]["prepared"].endswith("int32_bias.onnx")
    assert any(line.startswith("TensorRT ") for line in rep["trt"]["env"])
    md = (out / "gpu_check.md").read_text()
    assert "## TensorRT device checks" in md and "| cycles |" in md


def _load_gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pand_bench_gpu_check", REPO / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_spent_budget_records_skipped_rows_and_unknown_settings_are_refused(tmp_path, capsys):
    import torch

    gc = _load_gpu_check()
    compile_before = torch.compile
    rep = gc.main(["--dry-run", "--stages", "latency", "--budget-s", "0", "--out", str(tmp_path)])
    assert torch.compile is compile_before  # the dry run's eager compile backend does not leak out of main()
    rows = rep["latency"]["rows"]
    assert len(rows) == 8 and all(r["status"] == "skipped (budget)" for r in rows)
    on_disk = json.loads((tmp_path / "gpu_check.json").read_text())
    assert on_disk["latency"]["rows"] == rows and "nsd" not in on_disk
    assert "| eager | fp32 | 1 | skipped (budget) |" in (tmp_path / "gpu_check.md").read_text()

    a = gc.parse_args(["--dry-run", "--set", "epochs=3", "--set", 'latency_iters={"1": 4}'])
    assert a.size["epochs"] == 3 and a.size["latency_iters"] == {1: 4}
    with pytest.raises(SystemExit):
        gc.parse_args(["--set", "epoch=3"])
    assert "epochs" in capsys.readouterr().err  # the error lists the valid keys
