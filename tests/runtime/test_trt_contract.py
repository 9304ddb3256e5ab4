"""Contract tests of the TensorRT path that run without TensorRT or a GPU: a recording stand-in for the ``tensorrt``
and ``pycuda.driver`` modules (tests/runtime/fake_trt.py) is put into ``sys.modules`` and the calls pand makes are
checked against the TensorRT 10.x / 11.x API facts (builder flags per precision and version, TF32 cleared, the
optimisation profile, parser errors, the version floor, timing-cache errors, the backend's lock and close, the
``auto`` fallback). The tests that build and run real engines are tests/export/test_export_trt.py (skipped here)."""
from __future__ import annotations

import json
import sys
import threading
import warnings

import numpy as np
import pytest

import fake_trt
from pand.errors import ArtifactError, PandError

PROFILE = {"input": ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))}
ENV = {"trt_version": "x", "gpu_name": "Orin", "compute_capability": "8.7"}


@pytest.fixture
def install(monkeypatch):
    """``install(trt=..., cuda=...)`` puts the fakes into sys.modules and resets the runtime's lazy-import cache
    (both undone after the test)."""
    from pand_runtime import _lazy

    def _install(trt=None, cuda=None):
        monkeypatch.setattr(_lazy.tensorrt, "_module", None)
        monkeypatch.setattr(_lazy.pycuda_driver, "_module", None)
        if trt is not None:
            monkeypatch.setitem(sys.modules, "tensorrt", trt)
        if cuda is not None:
            pkg = type(sys)("pycuda")
            pkg.__spec__ = cuda.__spec__.__class__("pycuda", None, is_package=True)
            pkg.__path__ = []
            pkg.driver = cuda
            monkeypatch.setitem(sys.modules, "pycuda", pkg)
            monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
        return trt, cuda

    return _install


def _build(tmp_path, trt, precision="fp32", tf32=False, cache=None):
    from pand_runtime.trt_build import build_engine

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    return build_engine(onnx, tmp_path / "model.engine", precision, PROFILE, 1 << 30, cache, tf32=tf32, env=ENV,
                        trt=trt)


def _names(calls, kind):
    return [c[1] for c in calls if c[0] == kind]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt10_builds_strongly_typed_without_precision_flags_and_clears_tf32(tmp_path, precision):
    trt = fake_trt.make_trt("10.3.0")
    info = _build(tmp_path, trt, precision, cache=tmp_path / "t.cache")
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert _names(trt.calls, "create_network") == [strongly]
    assert _names(trt.calls, "clear_flag") == ["TF32"]
    assert _names(trt.calls, "set_flag") == []
    assert ("set_shape", "input", (1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64)) in trt.calls
    assert ("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 1 << 30) in trt.calls
    assert ("set_timing_cache", False) in trt.calls
    assert (tmp_path / "model.engine").read_bytes() == b"PLAN"
    assert (tmp_path / "t.cache").read_bytes() == b"+timings"
    assert info["typing"] == "strong" and info["tf32"] is False and info["builder_flags"] == []
    assert info["profile"]["input"] == {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [8, 3, 64, 64]}
    assert info["gpu_name"] == "Orin" and info["compute_capability"] == "8.7"


@pytest.mark.parametrize("precision,flags", [("fp32", []), ("fp16", ["FP16"]), ("int8", ["FP16", "INT8"])])
def test_trt10_weak_typing_fallback_sets_the_precision_flags(tmp_path, precision, flags):
    trt = fake_trt.make_trt("10.16.0", builds=[None, b"PLAN"])
    info = _build(tmp_path, trt, precision)
    assert _names(trt.calls, "create_network") == [1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED), 0]
    assert _names(trt.calls, "set_flag") == flags
    assert _names(trt.calls, "clear_flag") == ["TF32", "TF32"]
    assert info["typing"] == "weak+flags" and info["builder_flags"] == flags


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt11_is_strongly_typed_without_the_flag_and_never_sets_removed_flags(tmp_path, precision):
    trt = fake_trt.make_trt("11.1.0")
    assert not hasattr(trt.BuilderFlag, "FP16")  # removed in 11: using it would raise like the real bindings
    info = _build(tmp_path, trt, precision)
    assert _names(trt.calls, "create_network") == [0]
    assert _names(trt.calls, "set_flag") == [] and _names(trt.calls, "clear_flag") == ["TF32"]
    assert info["typing"] == "strong"


def test_trt11_build_failure_is_not_retried(tmp_path):
    trt = fake_trt.make_trt("11.1.0", builds=[None])
    with pytest.raises(PandError, match="failed to build an engine"):
        _build(tmp_path, trt, "int8")
    assert _names(trt.calls, "create_network") == [0]
    assert not (tmp_path / "model.engine").exists()


def test_tf32_is_kept_only_when_asked(tmp_path):
    trt = fake_trt.make_trt("10.3.0")
    info = _build(tmp_path, trt, "fp32", tf32=True)
    assert _names(trt.calls, "clear_flag") == [] and info["tf32"] is True


def test_tf32_has_its_own_looser_tolerance():
    from pand_runtime.metrics import TOLERANCES
    from pand_runtime.trt_build import TF32_TOLERANCE, engine_tolerance

    assert engine_tolerance("fp32", True) == TF32_TOLERANCE
    assert TF32_TOLERANCE.max_abs > TOLERANCES["fp32"].max_abs
    assert engine_tolerance("fp32", False) == TOLERANCES["fp32"]
    recorded = {**TOLERANCES["int8"].to_dict(), "min_agreement": 0.995}
    assert engine_tolerance("int8", False, recorded).min_agreement == 0.995


def test_parse_errors_are_reported_with_the_parser_messages(tmp_path):
    trt = fake_trt.make_trt("10.3.0", parse_errors=["DequantizeLinear: INT32 input not supported", "second"])
    with pytest.raises(PandError) as e:
        _build(tmp_path, trt, "int8")
    assert "cannot parse" in str(e.value) and "INT32 input not supported" in str(e.value) and "second" in str(e.value)
    assert not (tmp_path / "model.engine").exists()


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0"])
def test_tensorrt_older_than_10_is_refused_with_a_clear_message(tmp_path, install, version):
    from pand_runtime._lazy import require_tensorrt

    trt, _ = install(trt=fake_trt.make_trt("10.0.0"))
    trt.__version__ = version
    with pytest.raises(PandError, match=f"TensorRT {version} is too old: pand needs TensorRT >= 10"):
        require_tensorrt()
    with pytest.raises(PandError, match="too old"):
        _build(tmp_path, trt)


def test_unreadable_or_mismatched_timing_cache_is_an_error(tmp_path):
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"garbage")
    trt = fake_trt.make_trt("10.3.0", cache_error=RuntimeError("bad magic"))
    with pytest.raises(PandError, match=f"timing cache {cache}.*bad magic.*delete it"):
        _build(tmp_path, trt, cache=cache)
    trt = fake_trt.make_trt("10.3.0", cache_mismatch=True)
    with pytest.raises(PandError, match="another GPU or TensorRT version"):
        _build(tmp_path, trt, cache=cache)
    assert ("create_timing_cache", b"garbage") in trt.calls


def test_a_timing_cache_that_cannot_be_written_is_reported_not_ignored(tmp_path, caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("pand.engine"), "propagate", True)  # pand-engine's CLI turns it off
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    trt = fake_trt.make_trt("10.3.0")
    with caplog.at_level("WARNING", logger="pand.engine"):
        info = _build(tmp_path, trt, cache=blocker / "t.cache")
    assert (tmp_path / "model.engine").read_bytes() == b"PLAN"  # the engine itself is fine
    assert "timing_cache_error" in info and "could not write the timing cache" in caplog.text


def test_batch_profile_from_manifest_values():
    from pand_runtime.trt_build import batch_profile

    assert batch_profile("input", (3, 64, 64), 4, 8) == PROFILE
    assert batch_profile("x", (3, 8, 8), 64, 8)["x"][1] == (8, 3, 8, 8)  # opt clamped into 1..max


def _backend(install, tmp_path, delay=0.0):
    from pand_runtime.backends.trt_backend import TrtBackend

    trt, cuda = install(fake_trt.make_trt("10.3.0"), fake_trt.make_cuda())
    fake_trt.add_runtime(trt, cuda, delay=delay)
    plan = tmp_path / "model.engine"
    plan.write_bytes(b"PLAN")
    return TrtBackend(plan, expected={"trt_version": "10.3.0", "compute_capability": "8.7"}), cuda


def test_backend_runs_records_gpu_time_and_close_frees_everything(install, tmp_path):
    be, cuda = _backend(install, tmp_path)
    x = np.ones((3, 3, 8, 8), np.float32)
    out = be.run(x)
    np.testing.assert_allclose(out, 192.0 * np.arange(1, 5, dtype=np.float32)[None].repeat(3, 0))
    assert be.last_gpu_ms == 0.25
    assert cuda.live_contexts[0] == 1 and len(cuda.memory) == 2
    be.close()
    assert cuda.memory == {} and cuda.live_contexts[0] == 0
    assert sum(1 for c in cuda.calls if c[0] == "host_free") == 2
    assert be.engine is None and be.context is None
    be.close()  # idempotent
    assert cuda.live_contexts[0] == 0
    with pytest.raises(PandError, match="closed"):
        be.run(x)


def test_backend_concurrent_runs_are_serialised(install, tmp_path):
    be, _ = _backend(install, tmp_path, delay=0.002)
    results, errors = {}, []

    def worker(k):
        try:
            x = np.full((1 + k % 4, 3, 8, 8), float(k), np.float32)
            for _ in range(5):
                results.setdefault(k, []).append(be.run(x))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, outs in results.items():
        want = 192.0 * k * np.arange(1, 5, dtype=np.float32)
        for out in outs:
            assert out.shape == (1 + k % 4, 4)
            np.testing.assert_allclose(out, np.broadcast_to(want, out.shape))
    be.close()


def _with_engine(bundle, info):
    """Add a model.engine entry (with a real sha256) to a bundle's manifest."""
    from pand_runtime.io import sha256_file

    (bundle / "model.engine").write_bytes(b"PLAN")
    d = json.loads((bundle / "manifest.json").read_text())
    d["models"].append({"file": "model.engine", "format": "tensorrt", "sha256": sha256_file(bundle / "model.engine"),
                        "size_bytes": 4, "info": info})
    (bundle / "manifest.json").write_text(json.dumps(d))
    return bundle


@pytest.mark.parametrize("info,why", [
    ({"trt_version": "10.0.1", "compute_capability": "8.7", "gpu_name": "Orin"}, "built with TensorRT 10.0.1"),
    ({"trt_version": "10.3.0", "compute_capability": "9.0", "gpu_name": "H100"}, "compute capability 9.0"),
])
def test_auto_falls_back_to_onnxruntime_with_a_warning_naming_why(install, bundle_copy, info, why):
    from pand_runtime import EngineFallbackWarning, Predictor

    trt, cuda = install(fake_trt.make_trt("10.3.0"), fake_trt.make_cuda(cc=(8, 7)))
    fake_trt.add_runtime(trt, cuda)
    bundle = _with_engine(bundle_copy, info)
    with pytest.warns(EngineFallbackWarning, match=why):
        p = Predictor.from_bundle(bundle, backend="auto")
    assert p.backend_name == "onnxruntime"
    assert p.run(np.zeros((2, 3, 64, 64), np.float32)).shape == (2, 24)
    with pytest.raises(ArtifactError, match=why):  # asked for TensorRT explicitly: no silent fallback
        Predictor.from_bundle(bundle, backend="tensorrt")


def test_auto_uses_a_matching_engine_without_warning(install, bundle_copy):
    from pand_runtime import Predictor

    trt, cuda = install(fake_trt.make_trt("10.3.0"), fake_trt.make_cuda(cc=(8, 7)))
    fake_trt.add_runtime(trt, cuda, classes=24, sample=(3, 64, 64), max_batch=8)
    bundle = _with_engine(bundle_copy, {"trt_version": "10.3.0", "compute_capability": "8.7"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = Predictor.from_bundle(bundle, backend="auto")
    assert p.backend_name == "tensorrt" and p.describe()["gpu_name"] == "Orin"
    p.close()


def test_pand_engine_without_tensorrt_names_what_to_install(install, bundle_copy, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from pand_runtime.engine import _cli

    install()
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    r = CliRunner().invoke(_cli(), [str(bundle_copy), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for needle in ("pip install 'pand-runtime[trt]'", "python3-libnvinfer", "--system-site-packages", "pycuda>=2025.1.2",
                   "README"):
        assert needle in r.output
    assert not (tmp_path / "out").exists()


def test_pand_engine_refuses_a_cpu_int8_bundle(install, bundle_copy, tmp_path):
    from pand_runtime.engine import build_engine_bundle

    d = json.loads((bundle_copy / "manifest.json").read_text())
    d["precision"], d["int8_target"] = "int8", "cpu"
    (bundle_copy / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="--target tensorrt"):
        build_engine_bundle(bundle_copy, tmp_path / "out")


def test_pand_engine_writes_an_engine_bundle_with_the_manifest_guarantees(install, bundle_copy, tmp_path,
                                                                         monkeypatch):
    """Builder + parity + manifest with fake TensorRT/pycuda; the 'engine' is run by ONNX Runtime on the staged ONNX
    (so parity is real), standing in for TrtBackend."""
    import pand_runtime.engine as engine_module
    from pand_runtime import Predictor, load_bundle
    from pand_runtime.backends.ort_backend import OrtBackend
    from pand_runtime.engine import build_engine_bundle
    from pand_runtime.io import sha256_file

    trt, cuda = install(fake_trt.make_trt("10.3.0"), fake_trt.make_cuda(gpu_name="Orin", cc=(8, 7)))
    seen = {}

    class EngineViaOrt(OrtBackend):
        def __init__(self, engine_path, expected=None, device=0):
            seen["expected"] = expected
            super().__init__(engine_path.with_name("model.onnx"))

    monkeypatch.setattr(engine_module, "TrtBackend", EngineViaOrt)
    out = tmp_path / "engine-bundle"
    res = build_engine_bundle(bundle_copy, out, timing_cache=tmp_path / "cache" / "t.cache")
    assert res.valid, res.failures
    m = load_bundle(out, verify=True)  # every model file's sha256 checked
    eng = m.model("tensorrt")
    assert eng.sha256 == sha256_file(out / "model.engine")
    assert eng.info["trt_version"] == "10.3.0" and eng.info["gpu_name"] == "Orin"
    assert eng.info["compute_capability"] == "8.7" and eng.info["tf32"] is False
    src = load_bundle(bundle_copy)
    assert eng.info["profile"]["input"]["max"] == [src.max_batch, 3, 64, 64]
    assert m.model("onnx").sha256 == src.model("onnx").sha256 and m.versions["tensorrt"] == "10.3.0"
    assert m.parity["tensorrt"]["passed"] and m.parity["tensorrt"]["top1_agreement"] == 1.0
    assert m.class_names == src.class_names and m.preprocess == src.preprocess
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.engine", "model.onnx", "reference.npz"]
    assert (tmp_path / "cache" / "t.cache").is_file()
    assert seen["expected"]["gpu_name"] == "Orin"
    assert cuda.live_contexts[0] == 0  # the build's retained CUDA context was released
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".engine-bundle")]  # no staging left behind
    assert Predictor.from_bundle(out, backend="onnxruntime").backend_name == "onnxruntime"


def test_bench_labels_tensorrt_rows_end_to_end_with_gpu_compute_time(install, bundle_copy):
    from pand_runtime.bench import bench_bundle
    from pand_runtime.bench_report import render_text
    from pand_runtime.bench_rows import BenchOptions

    trt, cuda = install(fake_trt.make_trt("10.3.0"), fake_trt.make_cuda(cc=(8, 7)))
    fake_trt.add_runtime(trt, cuda, classes=24, sample=(3, 64, 64), max_batch=8)
    bundle = _with_engine(bundle_copy, {"trt_version": "10.3.0", "compute_capability": "8.7", "gpu_name": "Orin"})
    rows = bench_bundle(bundle, BenchOptions(batches=(1, 4), backend="tensorrt", warmup_ms=0, iterations=3,
                                             min_time=0))
    assert [r.status for r in rows] == ["ok", "ok"], [r.reason for r in rows]
    assert all(r.backend == "tensorrt" and r.timing.startswith("host end-to-end") and r.gpu_p50_ms == 0.25
               for r in rows)
    assert "end-to-end host time" in render_text(rows)


def test_auto_falls_back_when_tensorrt_is_older_than_10(install, bundle_copy):
    from pand_runtime import EngineFallbackWarning, Predictor

    install(fake_trt.make_trt("8.6.1"), fake_trt.make_cuda())
    bundle = _with_engine(bundle_copy, {"trt_version": "8.6.1", "compute_capability": "8.7"})
    with pytest.warns(EngineFallbackWarning, match="TensorRT 8.6.1 is too old"):
        assert Predictor.from_bundle(bundle, backend="auto").backend_name == "onnxruntime"


def test_pand_export_format_trt_without_tensorrt_points_to_pand_engine(install, rt_run_dir, monkeypatch, tmp_path):
    from pand_export import ExportOptions, export_bundle

    install()
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(PandError) as e:
        export_bundle(rt_run_dir, ExportOptions(format="trt", output=tmp_path / "out"))
    assert "pand-engine" in str(e.value) and "pip install 'pand-runtime[trt]'" in str(e.value)
    assert not (tmp_path / "out").exists()
