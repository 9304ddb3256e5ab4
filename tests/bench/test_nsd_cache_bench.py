"""Smoke test of ``bench/nsd_cache.py`` at toy sizes: both modes run end to end and the last line is the speedup.

The speed itself is not asserted (benchmarks, not unit tests, hold speed targets): with a toy teacher the ratio
means nothing. What is checked: the script runs both modes through ``pand.nsd.fit``, the cached run really builds
its cache (one teacher pass per image and view), and it reports what it measured in the documented format.
"""
import importlib.util
import re
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "nsd_cache.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("pand_bench_nsd_cache", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TOY = ["--teacher", "pand-tiny-vit", "--teacher-size", "32", "--image-size", "32", "--data-size", "36",
       "--train-per-class", "2", "--test-per-class", "1", "--epochs", "2", "--views", "2", "--batch-size", "16",
       "--optimizer", "sgd", "--lr", "0.01"]


def test_nsd_cache_bench_runs_both_modes_and_prints_speedup_last(tmp_path, capsys):
    lines = _check_bench_run(tmp_path, capsys, [])
    assert any(ln.startswith("teacher ") and "(forward, CPU," in ln for ln in lines)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with PAND_TEST_GPU=1)")
def test_nsd_cache_bench_on_cuda_with_amp_and_workers(tmp_path, capsys):
    """The GPU settings of the benchmark (not executed in the development environment: no GPU there)."""
    lines = _check_bench_run(tmp_path, capsys, ["--device", "cuda", "--precision", "bf16", "--teacher-precision",
                                                "amp", "--workers", "2"])
    assert any(ln.startswith("teacher ") and "student bf16, teacher amp" in ln for ln in lines)


def _check_bench_run(tmp_path, capsys, extra):
    bench = _load_bench()
    speedup = bench.main([*TOY, *extra, "--out", str(tmp_path)])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    m = re.fullmatch(r"speedup (\d+\.\d\d)", lines[-1])
    assert m and abs(float(m.group(1)) - speedup) < 0.006
    rows = {ln.split(":")[0].strip(): ln for ln in lines if re.match(r"\s*(live|cached): end-to-end", ln)}
    assert set(rows) == {"live", "cached"}
    assert any(ln.startswith("teacher/student forward FLOP ratio") for ln in lines)
    assert re.fullmatch(r"speedup with every epoch at its mode's median time: \d+\.\d\d", lines[-2])
    manifests = list((tmp_path / "cache" / "nsd_teacher").glob("*/manifest.json"))
    assert len(manifests) == 1  # the cached run built its cache, on the clock
    assert (tmp_path / "live" / "metrics.jsonl").is_file() and (tmp_path / "cached" / "metrics.jsonl").is_file()
    return lines
