"""TensorRT export + runtime backend. Needs TensorRT, pycuda and a CUDA GPU: skipped here (none of them exist on the
CPU machines this suite runs on; the code paths are written against the TRT 10.x/11.x API, docs/deployment.md)."""
import json
import shutil

import numpy as np
import pytest

import bundle_factory as bf

pytestmark = [pytest.mark.trt, pytest.mark.gpu]


def _trt_ready() -> str:
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError as e:
        return f"TensorRT/pycuda not installed ({e})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    return ""


REASON = _trt_ready()
requires_trt = pytest.mark.skipif(bool(REASON), reason=f"needs TensorRT + pycuda + a CUDA GPU: {REASON}")


@requires_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_bundle_builds_passes_parity_and_runs(run_dir, tmp_path, precision):
    from pand_runtime import Predictor, load_manifest

    res = bf.export(run_dir, tmp_path / precision, format="trt", precision=precision, parity_images=32,
                    max_batch=8, batch=4, timing_cache=tmp_path / "timing.cache")
    assert res.valid, res.failures
    m = load_manifest(res.bundle)
    engine = m.model("tensorrt")
    assert engine is not None and m.model("onnx") is not None
    info = engine.info
    assert info["trt_version"] and info["gpu_name"] and "." in info["compute_capability"]
    assert info["profile"]["input"] == {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [8, 3, 64, 64]}
    assert (tmp_path / "timing.cache").is_file()
    if precision == "int8":
        assert m.int8_target == "tensorrt"
    p = Predictor.from_bundle(res.bundle, backend="auto")
    assert p.backend_name == "tensorrt"
    ref = p.reference()
    from pand_runtime.preprocess import normalize_u8

    for n in (1, 3, 8, 11):  # within the profile, and beyond it (chunked by the predictor)
        out = p.run(normalize_u8(ref["images_u8"][:n], p.spec))
        assert out.shape == (n, 24)
        assert (out.argmax(1) == ref["logits"][:n].argmax(1)).mean() >= (0.9 if precision == "int8" else 1.0)


@requires_trt
def test_engine_from_another_trt_version_is_refused(run_dir, tmp_path):
    from pand.errors import ArtifactError
    from pand_runtime import Predictor

    res = bf.export(run_dir, tmp_path / "b", format="trt", precision="fp32", parity_images=8)
    bundle = tmp_path / "copy"
    shutil.copytree(res.bundle, bundle)
    d = json.loads((bundle / "manifest.json").read_text())
    d["models"][1]["info"]["trt_version"] = "9.0.0"
    (bundle / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="built with TensorRT 9.0.0"):
        Predictor.from_bundle(bundle, backend="tensorrt")
    assert Predictor.from_bundle(bundle, backend="onnxruntime").run(
        np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 24)


@requires_trt
@pytest.mark.parametrize("precision,tf32", [("fp32", False), ("fp32", True), ("fp16", False), ("int8", False)])
def test_pand_engine_builds_on_this_device_from_an_onnx_bundle(run_dir, tmp_path, precision, tf32):
    """The device workflow: an ONNX bundle (int8: the TensorRT flavour) -> pand-engine -> an engine bundle that passes
    its parity gate and runs with backend='auto'."""
    from pand_runtime import Predictor, load_bundle
    from pand_runtime.engine import build_engine_bundle
    from pand_runtime.trt_build import TF32_TOLERANCE

    kw = {"target": "tensorrt"} if precision == "int8" else {}
    src = bf.export(run_dir, tmp_path / "onnx", format="onnx", precision=precision, parity_images=32, max_batch=8,
                    batch=4, **kw)
    assert src.valid, src.failures
    res = build_engine_bundle(src.bundle, tmp_path / "engine", tf32=tf32, timing_cache=tmp_path / "t.cache")
    assert res.valid, res.failures
    m = load_bundle(res.bundle, verify=True)
    info = m.model("tensorrt").info
    assert info["tf32"] is tf32 and info["profile"]["input"]["max"] == [8, 3, 64, 64]
    assert info["trt_version"] == m.versions["tensorrt"] and info["gpu_name"] and info["compute_capability"]
    if tf32:
        assert m.parity["tensorrt"]["tolerance"]["max_abs"] == TF32_TOLERANCE.max_abs
    assert (tmp_path / "t.cache").stat().st_size > 0
    with Predictor.from_bundle(res.bundle, backend="auto") as p:
        assert p.backend_name == "tensorrt"
        assert p.run(np.zeros((3, 3, 64, 64), np.float32)).shape == (3, 24)
        assert p.backend.last_gpu_ms is not None and p.backend.last_gpu_ms > 0


@requires_trt
def test_trt_backend_concurrent_runs_equal_serial_and_close_frees(run_dir, tmp_path):
    import threading

    from pand_runtime import Predictor

    res = bf.export(run_dir, tmp_path / "b", format="trt", precision="fp32", parity_images=16, max_batch=8)
    p = Predictor.from_bundle(res.bundle, backend="tensorrt")
    x = np.random.default_rng(0).standard_normal((16, 3, 64, 64)).astype(np.float32)
    serial = [p.run(x[i:i + 1 + i % 4]) for i in range(8)]
    out = [None] * 8

    def work(i):
        for _ in range(10):
            out[i] = p.run(x[i:i + 1 + i % 4])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for a, b in zip(serial, out):
        np.testing.assert_array_equal(a, b)
    p.close()
    p.close()
