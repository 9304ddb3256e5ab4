"""pand-bench: timing method, statistics, the table, accuracy from stored parity data, --compare."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from pand_runtime import Predictor
from pand_runtime.bench import main
from pand_runtime.bench_compare import compare_rows
from pand_runtime.bench_rows import BenchRow
from pand_runtime.bench_timing import latency_stats, measure
from pand_runtime.device import device_key


def test_latency_stats():
    st = latency_stats(np.array([1.0, 2.0, 3.0, 4.0]), batch=8)
    assert st["p50_ms"] == 2.5 and st["mean_ms"] == 2.5
    assert st["p90_ms"] == pytest.approx(3.7) and st["p99_ms"] == pytest.approx(3.97)
    assert st["cv"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2.5)
    assert st["throughput"] == pytest.approx(8 * 1000 / 2.5)


def test_measure_warms_up_then_meets_both_minimums(monkeypatch):
    # a fake clock: every call of fn takes exactly dt = 2**-9 s (~1.95 ms, exact in binary) and nothing else takes
    # time, so the check depends neither on the machine's speed nor on its load
    import pand_runtime.bench_timing as rb

    dt, now, calls = 2.0 ** -9, [0.0], []

    def fn():
        calls.append(now[0])
        now[0] += dt

    monkeypatch.setattr(rb, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    s = measure(fn, warmup_ms=30, iterations=5, min_time=0.1)
    assert len(s) == 52 and s.sum() >= 100.0 > s[:-1].sum()  # stopped once min_time (100 ms) of calls were timed
    warm = len(calls) - len(s)
    assert warm == 16 and calls[warm] == 16 * dt >= 0.03 > calls[warm - 1]  # warm-up until 30 ms, not timed
    assert np.all(s == dt * 1000.0)
    s = measure(fn, warmup_ms=0, iterations=40, min_time=0.0)
    assert len(s) == 40


def test_device_key():
    key = device_key({"backend": "onnxruntime", "providers": ["CPUExecutionProvider"], "intra_op_threads": 2})
    assert key.startswith("cpu-") and "-t2-ort" in key and " " not in key
    assert device_key({"backend": "tensorrt", "gpu_name": "NVIDIA Jetson AGX Orin", "trt_version": "10.16.0",
                       "compute_capability": [8, 7]}).startswith("gpu-nvidia-jetson-agx-orin-sm8.7-trt10.16.0")


def _bench(args, tmp_path, capsys):
    try:
        main([*args, "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err


def test_table_json_markdown_and_a_failing_row(rt_bundle, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    code, out = _bench([str(rt_bundle), str(broken), "--batch", "1", "--batch", "4", "--iterations", "5",
                        "--min-time", "0", "--warmup-ms", "10", "--threads", "1"], tmp_path, capsys)
    assert code == 0, out
    assert "p50 ms" in out and "error: load:" in out and "no manifest.json" in out
    payload = json.loads((tmp_path / "b.json").read_text())
    rows = payload["rows"]
    assert [(r["name"], r["batch"], r["status"]) for r in rows] == [
        ("fp32", 1, "ok"), ("fp32", 4, "ok"), ("broken", 1, "error"), ("broken", 4, "error")]
    ok = rows[0]
    ref = Predictor.from_bundle(rt_bundle).reference()
    want_acc = float(np.mean(ref["logits"].argmax(1) == ref["labels"]))
    assert ok["top1"] == pytest.approx(want_acc) and ok["n_eval"] == 32
    assert ok["agreement"] == 1.0 and ok["max_abs_diff"] < 1e-3
    assert ok["iterations"] >= 5 and 0 < ok["p50_ms"] <= ok["p90_ms"] <= ok["p99_ms"]
    assert ok["throughput"] == pytest.approx(1000 / ok["mean_ms"]) and rows[1]["batch"] == 4
    assert "-t1-ort" in ok["details"]["device_key"] and payload["device_key"] == ok["details"]["device_key"]
    md = (tmp_path / "b.md").read_text()
    assert "| bundle | backend | precision | batch | p50 ms |" in md and md.count("\n| fp32 |") == 2


def test_compare_names_the_regressed_row(rt_bundle, tmp_path, capsys):
    args = [str(rt_bundle), "--iterations", "5", "--min-time", "0", "--warmup-ms", "10"]
    code, out = _bench(args, tmp_path, capsys)
    assert code == 0
    base = json.loads((tmp_path / "b.json").read_text())
    fast = tmp_path / "fast.json"
    base["rows"][0]["p50_ms"] /= 100.0  # the baseline was 100x faster: a regression now
    fast.write_text(json.dumps(base))
    code, out = _bench([*args, "--compare", str(fast), "--tolerance", "0.15"], tmp_path, capsys)
    assert code == 1 and "REGRESSION" in out and "fp32/onnxruntime/fp32/b1: p50" in out
    base["rows"][0]["p50_ms"] *= 1e4  # now the baseline is far slower: no regression
    fast.write_text(json.dumps(base))
    code, out = _bench([*args, "--compare", str(fast)], tmp_path, capsys)
    assert code == 0 and "no regression" in out


def test_compare_rows_accuracy_and_failures():
    row = BenchRow(bundle="b", name="b", backend="onnxruntime", precision="int8-cpu", batch=1, p50_ms=10.0, top1=0.80)
    base = {"rows": [dict(row.__dict__, p50_ms=9.0, top1=0.90)]}
    out = compare_rows([row], base, tolerance=0.15, acc_tolerance=0.01)
    assert out == ["b/onnxruntime/int8-cpu/b1: top-1 80.00% vs baseline 90.00% (drop > 1.00%)"]
    failed = BenchRow(bundle="b", name="b", backend="onnxruntime", precision="int8-cpu", status="error",
                      reason="boom")
    assert compare_rows([failed], base) == ["b/onnxruntime/int8-cpu/b1: failed (boom) but passed in the baseline"]
    nothing = compare_rows([row], {"rows": []})  # no baseline row at all: never "no regression"
    assert len(nothing) == 1 and "nothing was compared" in nothing[0]


def test_images_folder_accuracy(rt_bundle, tmp_path, capsys):
    p = Predictor.from_bundle(rt_bundle)
    ref = p.reference()
    folder = tmp_path / "images"
    for path, label in zip(ref["paths"][:10], ref["labels"][:10]):
        d = folder / p.class_names[int(label)]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, d)
    code, out = _bench([str(rt_bundle), "--images", str(folder), "--iterations", "3", "--min-time", "0"], tmp_path,
                       capsys)
    assert code == 0, out
    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    want = float(np.mean(ref["logits"][:10].argmax(1) == ref["labels"][:10]))
    assert row["n_eval"] == 10 and row["top1"] == pytest.approx(want)
    assert "folder names = class names" in row["eval_source"]
