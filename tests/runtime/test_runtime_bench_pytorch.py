"""pand-bench --pytorch: the run's PyTorch student timed on the same images and batch sizes, speedups vs PyTorch
eager, agreement with the bundle's stored logits, and the coefficient-of-variation warning."""
import sys

import pytest

from pand_runtime.bench import add_speedups, bench_pytorch, run_bench
from pand_runtime.bench_report import cv_warnings
from pand_runtime.bench_rows import BenchOptions, BenchRow

FAST = dict(warmup_ms=0, iterations=2, min_time=0, threads=1)


def test_speedups_are_relative_to_the_pytorch_eager_row_of_the_same_batch():
    def row(backend, precision, batch, p50):
        return BenchRow("x", "x", backend, precision, batch, p50_ms=p50)

    rows = [row("pytorch", "fp32-eager", 1, 10.0), row("pytorch", "fp32-eager", 8, 40.0),
            row("onnxruntime", "fp32", 1, 2.0), row("onnxruntime", "fp32", 8, 80.0), row("onnxruntime", "fp32", 2, 1.0)]
    add_speedups(rows)
    assert [r.speedup for r in rows] == [1.0, 1.0, 5.0, 0.5, None]


def test_cv_warning_names_the_unstable_rows_only():
    rows = [BenchRow("a", "a", "onnxruntime", "fp32", 1, cv=0.01), BenchRow("b", "b", "onnxruntime", "fp32", 1, cv=0.2),
            BenchRow("c", "c", "onnxruntime", "fp32", 1, cv=0.9, status="error")]
    w = cv_warnings(rows, 0.05)
    assert len(w) == 1 and w[0].startswith("b/onnxruntime/fp32/b1: latency CV 20.0% > 5.0%")


def test_pytorch_rows_agree_with_the_stored_logits_and_give_speedups(rt_run_dir, rt_bundle):
    rows = run_bench([rt_bundle], BenchOptions(batches=(1, 2), pytorch=rt_run_dir, torch_compile=False, **FAST))
    torch_rows = [r for r in rows if r.backend == "pytorch"]
    assert [(r.precision, r.batch, r.status) for r in torch_rows] == [("fp32-eager", 1, "ok"), ("fp32-eager", 2, "ok")]
    assert all(r.agreement == 1.0 and r.max_abs_diff < 1e-4 and r.speedup == 1.0 for r in torch_rows)
    assert all(r.speedup is not None and r.speedup > 0 for r in rows if r.backend == "onnxruntime")


def test_pytorch_without_torch_is_an_error_row_naming_the_extra(rt_run_dir, rt_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    rows = bench_pytorch(rt_run_dir, [rt_bundle], BenchOptions(batches=(1,), **FAST))
    assert [r.status for r in rows] == ["error", "error"]  # eager and compile
    assert all("pand[train]" in r.reason for r in rows)


@pytest.mark.slow
def test_torch_compile_row_works_or_says_why(rt_run_dir, rt_bundle):
    rows = bench_pytorch(rt_run_dir, [rt_bundle], BenchOptions(batches=(1,), **FAST))
    comp = [r for r in rows if r.precision == "fp32-compile"]
    assert len(comp) == 1 and (comp[0].status == "ok" or "torch.compile failed" in comp[0].reason)


def test_pytorch_rows_come_from_the_plugin_the_pand_distribution_registers():
    from pand_runtime.bench_plugins import PLUGIN_GROUP, PYTORCH_PLUGIN, find_plugin

    ep = find_plugin(PYTORCH_PLUGIN)
    assert ep is not None and ep.group == PLUGIN_GROUP
    assert ep.value == "pand_export.torch_bench:time_pytorch_student"


def test_pytorch_without_the_plugin_exits_2_naming_the_distribution(rt_run_dir, rt_bundle, tmp_path, monkeypatch,
                                                                    capsys):
    """Only pand-runtime installed: --pytorch is refused before anything runs (exit 2, no traceback, nothing
    written)."""
    import pand_runtime.bench_plugins as plugins
    from pand_runtime.bench import main
    from pand_runtime.errors import PandError

    monkeypatch.setattr(plugins, "_entry_points", lambda group: ())
    with pytest.raises(SystemExit) as e:
        main([str(rt_bundle), "--pytorch", str(rt_run_dir), "-o", str(tmp_path / "out"), "--iterations", "1",
              "--min-time", "0", "--warmup-ms", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert "--pytorch" in err and "pip install pand" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(PandError, match="pip install pand"):
        bench_pytorch(rt_run_dir, [rt_bundle], BenchOptions(batches=(1,), **FAST))
