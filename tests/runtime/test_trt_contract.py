"""Contract tests of the TensorRT path that run without TensorRT or a GPU, on faithful fakes of ``tensorrt`` and
``pycuda.driver`` (tests/fakes/fake_tensorrt.py, tests/fakes/fake_pycuda.py): builds return None without a profile
for a dynamic input, plans record their TF32 flag and device, stream handles are ints, copies and engine runs happen
only at ``synchronize``, context push/pop must balance per thread, ``detach()`` off its thread releases nothing, and
``create_timing_cache`` returns None for garbage. ``bench/mutate_trt.py`` checks that these tests catch single-line
mistakes in runtime/trt_build.py and runtime/backends/trt_backend.py. The tests that build and run real engines are
tests/export/test_export_trt.py (skipped here)."""
from __future__ import annotations

import json
import sys
import threading
import warnings

import numpy as np
import pytest

import fake_pycuda
import fake_tensorrt
from pand.errors import ArtifactError, PandError

PROFILE = {"input": ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))}
ENV = {"trt_version": "x", "gpu_name": "Orin", "compute_capability": "8.7"}
COMPAT = {"trt_version": "10.3.0", "compute_capability": "8.7", "gpu_name": "Orin"}


@pytest.fixture
def install(monkeypatch):
    """``install(trt=..., cuda=...)`` puts the fakes into sys.modules and resets the runtime's lazy-import cache
    (both undone after the test); ``None`` for either makes its import fail."""
    from pand_runtime import _lazy

    def _install(trt=None, cuda=None, missing=()):
        monkeypatch.setattr(_lazy.tensorrt, "_module", None)
        monkeypatch.setattr(_lazy.pycuda_driver, "_module", None)
        if trt is not None:
            monkeypatch.setitem(sys.modules, "tensorrt", trt)
        if cuda is not None:
            monkeypatch.setitem(sys.modules, "pycuda", fake_pycuda.install_package(cuda))
            monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
        for name in missing:
            monkeypatch.setitem(sys.modules, name, None)  # import name -> ImportError
        return trt, cuda

    return _install


def _build(tmp_path, trt, precision="fp32", tf32=False, cache=None, profile=PROFILE):
    from pand_runtime.trt_build import build_engine

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    return build_engine(onnx, tmp_path / "model.engine", precision, profile, 1 << 30, cache, tf32=tf32, env=ENV,
                        trt=trt)


def _names(calls, kind):
    return [c[1] for c in calls if c[0] == kind]


def _stacks_empty(cuda):
    return cuda.driver_stack() == [] and cuda.pycuda_stack() == []


# ---------------------------------------------------------------------------------------------------------------
# the builder
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt10_builds_strongly_typed_without_precision_flags_and_clears_tf32(tmp_path, precision):
    trt = fake_tensorrt.make_trt("10.3.0")
    info = _build(tmp_path, trt, precision, cache=tmp_path / "t.cache")
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert _names(trt.calls, "create_network") == [strongly]
    plan = trt.plan_info((tmp_path / "model.engine").read_bytes())
    assert plan["flags"] == [] and plan["strongly_typed"]  # TF32 cleared, no precision flag
    assert plan["profile"]["input"] == [[1, 3, 64, 64], [4, 3, 64, 64], [8, 3, 64, 64]]
    assert plan["pool"] == {"WORKSPACE": 1 << 30}
    assert ("set_timing_cache", False) in trt.calls
    assert (tmp_path / "t.cache").read_bytes().startswith(fake_tensorrt.CACHE_MAGIC)
    assert info["typing"] == "strong" and info["tf32"] is False and info["builder_flags"] == []
    assert info["profile"]["input"] == {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [8, 3, 64, 64]}
    assert info["gpu_name"] == "Orin" and info["compute_capability"] == "8.7"


def test_the_timing_cache_written_by_one_build_is_read_by_the_next(tmp_path):
    trt = fake_tensorrt.make_trt("10.3.0")
    _build(tmp_path, trt, cache=tmp_path / "t.cache")
    _build(tmp_path, trt, cache=tmp_path / "t.cache")
    meta = json.loads((tmp_path / "t.cache").read_bytes()[len(fake_tensorrt.CACHE_MAGIC):])
    assert meta["entries"] == 2  # the second build started from the first one's cache


@pytest.mark.parametrize("precision,flags", [("fp32", []), ("fp16", ["FP16"]), ("int8", ["FP16", "INT8"])])
def test_trt10_weak_typing_fallback_sets_the_precision_flags(tmp_path, precision, flags, caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("pand.engine"), "propagate", True)
    trt = fake_tensorrt.make_trt("10.16.0", strong_build_fails=True)
    with caplog.at_level("WARNING", logger="pand.engine"):
        info = _build(tmp_path, trt, precision)
    assert _names(trt.calls, "create_network") == [1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED), 0]
    assert sorted(trt.plan_info((tmp_path / "model.engine").read_bytes())["flags"]) == sorted(flags)
    assert info["typing"] == "weak+flags" and info["builder_flags"] == flags
    if precision == "fp32":  # the retry names no builder flag that it does not set
        assert "no precision builder flag" in caplog.text and "FP32 builder flag" not in caplog.text


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt11_is_strongly_typed_without_the_flag_and_never_sets_removed_flags(tmp_path, precision):
    trt = fake_tensorrt.make_trt("11.1.0")
    assert not hasattr(trt.BuilderFlag, "FP16")  # removed in 11: using it would raise like the real bindings
    info = _build(tmp_path, trt, precision)
    assert _names(trt.calls, "create_network") == [0]
    assert trt.plan_info((tmp_path / "model.engine").read_bytes())["flags"] == []
    assert info["typing"] == "strong"


def test_trt11_build_failure_is_not_retried(tmp_path):
    trt = fake_tensorrt.make_trt("11.1.0", build_fails=True)
    with pytest.raises(PandError, match="failed to build an engine"):
        _build(tmp_path, trt, "int8")
    assert _names(trt.calls, "create_network") == [0]
    assert not (tmp_path / "model.engine").exists()


def test_a_dynamic_batch_network_needs_its_optimisation_profile(tmp_path):
    trt = fake_tensorrt.make_trt("11.1.0")
    with pytest.raises(PandError, match="failed to build"):
        _build(tmp_path, trt, profile=None)
    assert any("no optimization profile has been defined" in line for line in trt.log)
    trt = fake_tensorrt.make_trt("11.1.0")
    _build(tmp_path, trt)  # with the profile: builds
    assert trt.plan_info((tmp_path / "model.engine").read_bytes())["profile"]["input"][2] == [8, 3, 64, 64]


def test_a_profile_tensorrt_refuses_is_an_error_naming_the_shapes(tmp_path):
    trt = fake_tensorrt.make_trt("10.3.0")
    bad = {"input": ((1, 3, 64, 64), (8, 3, 64, 64), (4, 3, 64, 64))}  # opt > max
    with pytest.raises(PandError,
                       match=r"profile shapes of 'input'.*max \(4, 3, 64, 64\) \(RuntimeError: .*inconsistent"):
        _build(tmp_path, trt, profile=bad)
    assert not (tmp_path / "model.engine").exists()


def test_tf32_is_kept_only_when_asked(tmp_path):
    trt = fake_tensorrt.make_trt("10.3.0")
    info = _build(tmp_path, trt, "fp32", tf32=True)
    assert "TF32" in trt.plan_info((tmp_path / "model.engine").read_bytes())["flags"] and info["tf32"] is True


def test_tf32_has_its_own_looser_tolerance():
    from pand_runtime.metrics import TOLERANCES
    from pand_runtime.trt_build import TF32_TOLERANCE, engine_tolerance

    assert engine_tolerance("fp32", True) == TF32_TOLERANCE
    assert TF32_TOLERANCE.max_abs > TOLERANCES["fp32"].max_abs
    assert engine_tolerance("fp32", False) == TOLERANCES["fp32"]
    recorded = {**TOLERANCES["int8"].to_dict(), "min_agreement": 0.995}
    assert engine_tolerance("int8", False, recorded).min_agreement == 0.995


def test_parse_errors_are_reported_with_the_parser_messages(tmp_path):
    trt = fake_tensorrt.make_trt("10.3.0", parse_errors=["DequantizeLinear: INT32 input not supported", "second"])
    with pytest.raises(PandError) as e:
        _build(tmp_path, trt, "int8")
    assert "cannot parse" in str(e.value) and "INT32 input not supported" in str(e.value) and "second" in str(e.value)
    assert not (tmp_path / "model.engine").exists()


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0"])
def test_tensorrt_older_than_10_is_refused_with_a_clear_message(tmp_path, install, version):
    from pand_runtime._lazy import require_tensorrt

    trt, _ = install(trt=fake_tensorrt.make_trt("10.0.0"))
    trt.__version__ = version
    with pytest.raises(PandError, match=f"TensorRT {version} is too old: pand needs TensorRT >= 10"):
        require_tensorrt()
    with pytest.raises(PandError, match="too old"):
        _build(tmp_path, trt)


def test_a_garbage_timing_cache_takes_tensorrts_none_branch(tmp_path):
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"garbage")
    trt = fake_tensorrt.make_trt("10.3.0")
    with pytest.raises(PandError, match=f"timing cache {cache}.*returned None.*delete it"):
        _build(tmp_path, trt, cache=cache)
    assert ("create_timing_cache", b"garbage") in trt.calls
    assert not (tmp_path / "model.engine").exists()


def test_a_timing_cache_of_another_version_is_refused(tmp_path):
    cache = tmp_path / "t.cache"
    _build(tmp_path, fake_tensorrt.make_trt("10.2.0"), cache=cache)  # a valid cache, of TensorRT 10.2
    trt = fake_tensorrt.make_trt("10.3.0")
    with pytest.raises(PandError, match="another GPU or TensorRT version"):
        _build(tmp_path, trt, cache=cache)
    assert ("set_timing_cache", False) in trt.calls


def test_a_timing_cache_that_cannot_be_written_is_reported_not_ignored(tmp_path, caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("pand.engine"), "propagate", True)  # pand-engine's CLI turns it off
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    trt = fake_tensorrt.make_trt("10.3.0")
    with caplog.at_level("WARNING", logger="pand.engine"):
        info = _build(tmp_path, trt, cache=blocker / "t.cache")
    assert (tmp_path / "model.engine").read_bytes().startswith(fake_tensorrt.PLAN_MAGIC)  # the engine is fine
    assert "timing_cache_error" in info and "could not write the timing cache" in caplog.text


def test_batch_profile_from_manifest_values():
    from pand_runtime.trt_build import batch_profile

    assert batch_profile("input", (3, 64, 64), 4, 8) == PROFILE
    assert batch_profile("x", (3, 8, 8), 64, 8)["x"][1] == (8, 3, 8, 8)  # opt clamped into 1..max


# ---------------------------------------------------------------------------------------------------------------
# the backend
# ---------------------------------------------------------------------------------------------------------------
def _backend(install, tmp_path, delay=0.0, plan=None, version="10.3.0", cuda=None):
    from pand_runtime.backends.trt_backend import TrtBackend

    cuda = cuda or fake_pycuda.make_cuda()
    trt, cuda = install(fake_tensorrt.make_trt(version, cuda=cuda, exec_delay=delay), cuda)
    path = tmp_path / "model.engine"
    path.write_bytes(plan if plan is not None else fake_tensorrt.make_plan(version))
    return TrtBackend(path, expected={"trt_version": version, "compute_capability": "8.7"}), trt, cuda


def _want(x):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x.sum(1, keepdims=True) * np.arange(1, 5)


def test_backend_runs_records_gpu_time_and_close_frees_everything(install, tmp_path):
    be, trt, cuda = _backend(install, tmp_path)
    x = np.ones((3, 3, 8, 8), np.float32)
    np.testing.assert_allclose(be.run(x), _want(x))
    assert be.last_gpu_ms == 0.25
    assert cuda.primary_refcount() == 1 and cuda.live_device_bytes() > 0 and cuda.live_host_allocations() == 2
    assert _stacks_empty(cuda)  # construction and run leave this thread's context stacks as they were
    be.close()
    assert cuda.live_device_bytes() == 0 and cuda.live_host_allocations() == 0 and cuda.primary_refcount() == 0
    assert be.engine is None and be.context is None and not cuda.leaks and _stacks_empty(cuda)
    be.close()  # idempotent
    assert cuda.primary_refcount() == 0
    with pytest.raises(PandError, match="closed"):
        be.run(x)


def test_every_call_runs_its_own_batch_and_fresh_outputs(install, tmp_path):
    be, trt, _ = _backend(install, tmp_path)
    rng = np.random.default_rng(0)
    for n in (3, 1, 4, 2):
        x = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(be.run(x), _want(x), rtol=1e-5, atol=1e-4)
    assert trt.executed == [3, 1, 4, 2]  # the engine ran each call's batch, not the profile's maximum
    be.close()


def test_fp16_io_uses_fp16_host_buffers(install, tmp_path):
    be, trt, cuda = _backend(install, tmp_path, plan=fake_tensorrt.make_plan("10.3.0", dtype="HALF"))
    assert {h.dtype for h in be._host.values()} == {np.dtype(np.float16)}
    x = np.full((2, 3, 8, 8), 0.5, np.float32)
    out = be.run(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _want(x), rtol=1e-3)
    be.close()


def test_bf16_io_is_a_pand_error_and_releases_the_context(install, tmp_path):
    with pytest.raises(PandError, match="BF16"):
        _backend(install, tmp_path, plan=fake_tensorrt.make_plan("10.3.0", dtype="BF16"))
    cuda = sys.modules["pycuda.driver"]
    assert cuda.primary_refcount() == 0 and cuda.live_device_bytes() == 0 and _stacks_empty(cuda)


def test_a_shape_the_context_refuses_is_an_error_naming_the_shape_and_profile(install, tmp_path):
    be, _, cuda = _backend(install, tmp_path)
    be.max_batch = 6  # pretend the profile were larger than the engine's (max 4)
    with pytest.raises(PandError, match=r"refused the input shape \(6, 3, 8, 8\).*batch 1\.\.6"):
        be.run(np.ones((6, 3, 8, 8), np.float32))
    assert _stacks_empty(cuda)
    be.close()


def test_tf32_engines_differ_from_fp32_and_pand_clears_tf32(install, tmp_path):
    """Build with the fake builder, run with the backend: the default build is exact, a --tf32 build is not."""
    from pand_runtime.backends.trt_backend import TrtBackend

    cuda = fake_pycuda.make_cuda()
    x = (1 + np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8) * 1e-4)
    outs = {}
    for tf32 in (False, True):
        trt, _ = install(fake_tensorrt.make_trt("10.3.0", cuda=cuda, sample=(3, 8, 8), classes=4), cuda)
        d = tmp_path / str(tf32)
        d.mkdir()
        from pand_runtime.trt_build import build_engine

        (d / "m.onnx").write_bytes(b"onnx")
        build_engine(d / "m.onnx", d / "m.engine", "fp32", {"input": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))},
                     tf32=tf32, env=ENV, trt=trt)
        be = TrtBackend(d / "m.engine", expected=COMPAT)
        outs[tf32] = be.run(x)
        be.close()
    np.testing.assert_allclose(outs[False], _want(x), rtol=1e-6)
    assert np.abs(outs[True] - _want(x)).max() > 1e-3


def test_backend_concurrent_runs_are_serialised(install, tmp_path):
    be, _, cuda = _backend(install, tmp_path, delay=0.002)
    results, errors = {}, []

    def worker(k):
        try:
            x = np.full((1 + k % 4, 3, 8, 8), float(k), np.float32)
            for _ in range(5):
                results.setdefault(k, []).append(be.run(x))
            assert _stacks_empty(cuda)  # each worker thread's stacks are balanced
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k, outs in results.items():
        want = 192.0 * k * np.arange(1, 5, dtype=np.float32)
        for out in outs:
            assert out.shape == (1 + k % 4, 4)
            np.testing.assert_allclose(out, np.broadcast_to(want, out.shape))
    be.close()


def test_close_from_another_thread_releases_the_context_once(install, tmp_path):
    be, _, cuda = _backend(install, tmp_path)
    be.run(np.ones((2, 3, 8, 8), np.float32))
    errors = []

    def closer():
        try:
            be.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=closer) for _ in range(3)]  # three threads race to close it
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert cuda.primary_refcount() == 0 and cuda.live_device_bytes() == 0 and cuda.live_host_allocations() == 0
    assert not cuda.leaks


def test_many_create_run_close_cycles_leave_nothing_behind(install, tmp_path):
    be, _, cuda = _backend(install, tmp_path)
    be.close()
    from pand_runtime.backends.trt_backend import TrtBackend

    for _ in range(10):
        b = TrtBackend(tmp_path / "model.engine", expected=COMPAT)
        b.run(np.ones((1, 3, 8, 8), np.float32))
        b.close()
    assert cuda.primary_refcount() == 0 and cuda.live_device_bytes() == 0 and not cuda.leaks
    assert _stacks_empty(cuda)


def test_pand_engine_build_scope_leaves_the_context_stack_as_found(install):
    from pand_runtime.engine import _on_device

    cuda = fake_pycuda.make_cuda()
    install(fake_tensorrt.make_trt("10.3.0", cuda=cuda), cuda)
    cuda.init()
    seen = []
    for _ in range(3):
        _on_device(0, lambda: seen.append((cuda.driver_stack(), cuda.mem_get_info())))
    assert len(seen) == 3 and all(len(s[0]) == 1 for s in seen)  # a context was current inside
    assert _stacks_empty(cuda) and cuda.primary_refcount() == 0


def test_the_fakes_fail_like_pycuda_and_tensorrt():
    """The fakes' own fidelity: what the backend must never do fails here as on a device."""
    cuda = fake_pycuda.make_cuda()
    cuda.init()
    with pytest.raises(fake_pycuda.LogicError, match="cannot pop non-current context"):
        cuda.Context.pop()  # unbalanced pop
    ctx = cuda.Device(0).retain_primary_context()
    with pytest.raises(fake_pycuda.LogicError, match="no currently active context"):
        cuda.mem_alloc(16)
    done = []
    t = threading.Thread(target=lambda: (ctx.detach(), done.append(1)))
    t.start()
    t.join()
    assert done and cuda.primary_refcount() == 1 and cuda.leaks  # detach off its thread released nothing
    trt = fake_tensorrt.make_trt("10.3.0", cuda=cuda)
    assert trt.nptype(trt.DataType.HALF) is np.float16
    with pytest.raises(TypeError):
        trt.nptype(trt.DataType.BF16)
    assert trt.Builder(trt.Logger()).create_builder_config().create_timing_cache(b"junk") is None


def test_an_engine_of_another_version_is_refused_before_and_by_deserialisation(install, tmp_path):
    from pand_runtime.backends.trt_backend import TrtBackend

    be, trt, cuda = _backend(install, tmp_path)
    be.close()
    (tmp_path / "old.engine").write_bytes(fake_tensorrt.make_plan("10.0.1"))
    with pytest.raises(ArtifactError, match="built with TensorRT 10.0.1"):
        TrtBackend(tmp_path / "old.engine", expected={"trt_version": "10.0.1", "compute_capability": "8.7"})
    with pytest.raises(ArtifactError, match="could not deserialize"):  # a manifest that lies: TensorRT refuses it
        TrtBackend(tmp_path / "old.engine", expected=COMPAT)
    assert any("not compatible with this version" in line for line in trt.log)
    assert cuda.primary_refcount() == 0 and _stacks_empty(cuda)


# ---------------------------------------------------------------------------------------------------------------
# Predictor: backend="auto" and "tensorrt"
# ---------------------------------------------------------------------------------------------------------------
def _with_engine(bundle, info, plan=None):
    """Add a model.engine entry (with a real sha256) to a bundle's manifest."""
    from pand_runtime.io import sha256_file

    plan = plan if plan is not None else fake_tensorrt.make_plan("10.3.0", sample=(3, 64, 64), classes=24,
                                                                  max_batch=8)
    (bundle / "model.engine").write_bytes(plan)
    d = json.loads((bundle / "manifest.json").read_text())
    d["models"].append({"file": "model.engine", "format": "tensorrt", "sha256": sha256_file(bundle / "model.engine"),
                        "size_bytes": len(plan), "info": info})
    (bundle / "manifest.json").write_text(json.dumps(d))
    return bundle


def _fakes(version="10.3.0", **cuda_kw):
    cuda = fake_pycuda.make_cuda(**cuda_kw)
    return fake_tensorrt.make_trt(version, cuda=cuda), cuda


@pytest.mark.parametrize("case,why", [
    ("no-tensorrt", r"TensorRT is not installed or cannot be imported.*Fix: Install it.*python3-libnvinfer"),
    ("no-pycuda", r"pycuda is not installed.*Fix: pip install 'pycuda>=2025.1.2'.*python3-dev"),
    ("no-gpu", r"CUDA sees no GPU.*no CUDA-capable device.*Fix: run on the machine with the NVIDIA GPU"),
    ("old-trt", r"TensorRT 8.6.1 is too old.*Fix: x86: pip install 'tensorrt>=10'"),
    ("version", r"built with TensorRT 10.0.1.*rebuild it here with pand-engine"),
    ("gpu", r"compute capability 9.0.*Rebuild the engine on this device"),
    ("garbage-plan", r"could not deserialize.*rebuild it on this device"),
    ("bf16", r"BF16, which numpy cannot hold"),
    ("oom", r"MemoryError: cuMemAlloc failed: out of memory.*Fix:"),
])
def test_auto_falls_back_with_one_warning_naming_the_cause_and_fix(install, bundle_copy, case, why):
    from pand_runtime import EngineFallbackWarning, Predictor

    info, plan = dict(COMPAT), None
    if case == "no-tensorrt":
        install(None, _fakes()[1], missing=("tensorrt",))
    elif case == "no-pycuda":
        install(_fakes()[0], None, missing=("pycuda", "pycuda.driver"))
    elif case == "no-gpu":
        install(*_fakes(count=0))
    elif case == "old-trt":
        install(*_fakes("8.6.1"))
    else:
        install(*_fakes(total_memory=fake_pycuda.CONTEXT_OVERHEAD + (1 << 20) if case == "oom" else 8 << 30))
        if case == "version":
            info["trt_version"] = "10.0.1"
        elif case == "gpu":
            info.update(compute_capability="9.0", gpu_name="H100")
        elif case == "garbage-plan":
            plan = b"not a plan"
        elif case == "bf16":
            plan = fake_tensorrt.make_plan("10.3.0", sample=(3, 64, 64), classes=24, max_batch=8, dtype="BF16")
        elif case == "oom":
            plan = fake_tensorrt.make_plan("10.3.0", sample=(3, 64, 64), classes=24, max_batch=64)  # 3 MB > 1 MB
    bundle = _with_engine(bundle_copy, info, plan)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = Predictor.from_bundle(bundle, backend="auto")
    fallback = [w for w in caught if issubclass(w.category, EngineFallbackWarning)]
    assert len(fallback) == 1, [str(w.message) for w in caught]
    import re

    assert re.search(why, str(fallback[0].message), re.S), str(fallback[0].message)
    assert "Running its ONNX model on ONNX Runtime" in str(fallback[0].message)
    assert p.backend_name == "onnxruntime"
    assert p.run(np.zeros((2, 3, 64, 64), np.float32)).shape == (2, 24)
    with pytest.raises(PandError, match=str(bundle)):  # asked for TensorRT explicitly: no fallback, a PandError
        Predictor.from_bundle(bundle, backend="tensorrt")
    cuda = sys.modules.get("pycuda.driver")
    if cuda is not None and hasattr(cuda, "primary_refcount"):
        assert cuda.primary_refcount() == 0 and _stacks_empty(cuda)


def test_under_tensorrt_a_load_error_is_a_pand_error_naming_the_bundle(install, bundle_copy):
    from pand_runtime import Predictor

    install(*_fakes())
    bundle = _with_engine(bundle_copy, COMPAT, b"not a plan")
    with pytest.raises(ArtifactError, match=str(bundle)):
        Predictor.from_bundle(bundle, backend="tensorrt")


def test_auto_uses_a_matching_engine_without_warning(install, bundle_copy):
    from pand_runtime import Predictor

    install(*_fakes())
    bundle = _with_engine(bundle_copy, COMPAT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = Predictor.from_bundle(bundle, backend="auto")
    assert p.backend_name == "tensorrt" and p.describe()["gpu_name"] == "Orin"
    for n in (1, 3, 8, 11):  # within the profile and beyond it (chunked by the predictor)
        x = np.random.default_rng(n).normal(size=(n, 3, 64, 64)).astype(np.float32)
        want = x.reshape(n, -1).astype(np.float64).sum(1, keepdims=True) * np.arange(1, 25)
        np.testing.assert_allclose(p.run(x), want, rtol=1e-4, atol=1e-2)
    p.close()


def test_auto_without_an_engine_never_probes_tensorrt(install, bundle_copy):
    from pand_runtime import Predictor

    install(None, None, missing=("tensorrt", "pycuda", "pycuda.driver"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Predictor.from_bundle(bundle_copy, backend="auto").backend_name == "onnxruntime"


# ---------------------------------------------------------------------------------------------------------------
# pand-engine, pand-bench, pand-export
# ---------------------------------------------------------------------------------------------------------------
def test_pand_engine_without_tensorrt_names_what_to_install(install, bundle_copy, tmp_path):
    from click.testing import CliRunner

    from pand_runtime.engine import _cli

    install(missing=("tensorrt",))
    r = CliRunner().invoke(_cli(), [str(bundle_copy), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for needle in ("pip install 'pand-runtime[trt]'", "python3-libnvinfer", "--system-site-packages", "pycuda>=2025.1.2",
                   "README"):
        assert needle in r.output
    assert not (tmp_path / "out").exists()


def test_pand_engine_check_reports_tensorrt_missing_with_exit_2(install):
    from click.testing import CliRunner

    from pand_runtime.engine import _cli

    install(None, fake_pycuda.make_cuda(), missing=("tensorrt",))
    r = CliRunner().invoke(_cli(), ["--check"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    assert "TensorRT   MISSING" in r.output and "missing: TensorRT is not installed" in r.output
    assert "python3-libnvinfer" in r.output and "numpy " in r.output and "GPU 0      Orin" in r.output
    assert "NOT ready" in r.output


def test_pand_engine_check_passes_where_everything_is_present(install):
    from click.testing import CliRunner

    from pand_runtime.engine import _cli

    install(*_fakes())
    r = CliRunner().invoke(_cli(), ["--check"])
    assert r.exit_code == 0, r.output
    assert "TensorRT   10.3.0" in r.output and "pycuda     2025.1.2" in r.output and "driver 12.6" in r.output
    assert "compute capability 8.7" in r.output and "missing:" not in r.output


def test_pand_engine_refuses_a_cpu_int8_bundle(install, bundle_copy, tmp_path):
    from pand_runtime.engine import build_engine_bundle

    d = json.loads((bundle_copy / "manifest.json").read_text())
    d["precision"], d["int8_target"] = "int8", "cpu"
    (bundle_copy / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="--target tensorrt"):
        build_engine_bundle(bundle_copy, tmp_path / "out")


def test_pand_engine_writes_an_engine_bundle_with_the_manifest_guarantees(install, bundle_copy, tmp_path,
                                                                         monkeypatch):
    """The fake builder builds the plan; the parity run uses ONNX Runtime on the staged ONNX (so parity is real),
    standing in for TrtBackend."""
    import pand_runtime.engine as engine_module
    from pand_runtime import Predictor, load_bundle
    from pand_runtime.backends.ort_backend import OrtBackend
    from pand_runtime.engine import build_engine_bundle
    from pand_runtime.io import sha256_file

    trt, cuda = install(*_fakes())
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
    assert trt.plan_info((out / "model.engine").read_bytes())["profile"]["input"][2] == [src.max_batch, 3, 64, 64]
    assert m.model("onnx").sha256 == src.model("onnx").sha256 and m.versions["tensorrt"] == "10.3.0"
    assert m.parity["tensorrt"]["passed"] and m.parity["tensorrt"]["top1_agreement"] == 1.0
    assert m.class_names == src.class_names and m.preprocess == src.preprocess
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.engine", "model.onnx", "reference.npz"]
    assert (tmp_path / "cache" / "t.cache").is_file()
    assert seen["expected"]["gpu_name"] == "Orin"
    assert cuda.primary_refcount() == 0 and _stacks_empty(cuda)  # the build's context released, stack as found
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".engine-bundle")]  # no staging left behind
    assert Predictor.from_bundle(out, backend="onnxruntime").backend_name == "onnxruntime"


def test_bench_labels_tensorrt_rows_end_to_end_with_gpu_compute_time(install, bundle_copy):
    from pand_runtime.bench import bench_bundle
    from pand_runtime.bench_report import render_text
    from pand_runtime.bench_rows import BenchOptions

    install(*_fakes())
    bundle = _with_engine(bundle_copy, COMPAT)
    rows = bench_bundle(bundle, BenchOptions(batches=(1, 4), backend="tensorrt", warmup_ms=0, iterations=3,
                                             min_time=0))
    assert [r.status for r in rows] == ["ok", "ok"], [r.reason for r in rows]
    assert all(r.backend == "tensorrt" and r.timing.startswith("host end-to-end") and r.gpu_p50_ms == 0.25
               for r in rows)
    assert "end-to-end host time" in render_text(rows)


def test_pand_export_format_trt_without_tensorrt_points_to_pand_engine(install, rt_run_dir, tmp_path):
    from pand_export import ExportOptions, export_bundle

    install(missing=("tensorrt",))
    with pytest.raises(PandError) as e:
        export_bundle(rt_run_dir, ExportOptions(format="trt", output=tmp_path / "out"))
    assert "pand-engine" in str(e.value) and "pip install 'pand-runtime[trt]'" in str(e.value)
    assert not (tmp_path / "out").exists()
