"""Predictor: loading and checking a bundle, inputs, top-k output, backends and their errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pand.errors import ArtifactError, PandError
from pand_runtime import Predictor, load_bundle
from pand_runtime.backends.ort_backend import OrtBackend, resolve_providers
from pand_runtime.backends.trt_backend import TrtBackend, check_engine_compat
from pand_runtime.metrics import softmax
from pand_runtime.preprocess import normalize_u8


def test_predict_matches_the_torch_student_on_raw_image_files(rt_bundle, rt_run_dir):
    """End to end: file -> runtime preprocessing -> ORT vs file -> training eval transform -> PyTorch."""
    from pand.data.transforms import create_transform
    from pand_export.source import load_source

    p = Predictor.from_bundle(rt_bundle)
    paths = [str(x) for x in p.reference()["paths"][:12]]
    src = load_source(rt_run_dir)
    tf = create_transform(src.preprocess, is_train=False)
    with torch.no_grad():
        want = src.model(torch.stack([tf(Image.open(x).convert("RGB")) for x in paths])).numpy()
    np.testing.assert_allclose(p.predict_logits(paths), want, atol=1e-4)
    preds = p.predict(paths, top_k=5)
    assert [q.indices[0] for q in preds] == list(want.argmax(1))
    probs = softmax(want)
    for q, row in zip(preds, probs):
        assert q.labels == [p.class_names[i] for i in q.indices] and q.label == q.labels[0]
        assert q.probs == sorted(q.probs, reverse=True) and len(q.probs) == 5
        np.testing.assert_allclose(q.probs, np.sort(row)[::-1][:5], rtol=1e-4, atol=1e-6)


def test_stored_reference_is_reproduced(rt_bundle):
    p = Predictor.from_bundle(rt_bundle)
    ref = p.reference()
    logits = p.run(normalize_u8(ref["images_u8"], p.spec))
    assert np.abs(logits - ref["logits"]).max() < 1e-3
    assert (logits.argmax(1) == ref["logits"].argmax(1)).all()


def test_top_k_is_capped_and_large_inputs_are_chunked(rt_bundle):
    p = Predictor.from_bundle(rt_bundle)
    assert p.max_batch == 8  # the fixture exported --max-batch 8
    x = normalize_u8(p.reference()["images_u8"][:20], p.spec)  # 20 > max_batch: three chunks
    np.testing.assert_allclose(p.run(x), p.reference()["logits"][:20], atol=1e-3)
    out = p.predict(x[:2], top_k=1000)
    assert len(out) == 2 and len(out[0].labels) == 24 and sum(out[0].probs) == pytest.approx(1.0, abs=1e-5)


def test_session_options(rt_bundle):
    p = Predictor.from_bundle(rt_bundle, backend="onnxruntime", providers=["cpu"], threads=1,
                              graph_optimization="basic")
    d = p.describe()
    assert d["providers"] == ["CPUExecutionProvider"] and d["intra_op_threads"] == 1
    assert d["graph_optimization"] == "basic" and p.backend_name == "onnxruntime"
    with pytest.raises(PandError, match="unknown graph optimisation level 'max'"):
        Predictor.from_bundle(rt_bundle, graph_optimization="max")


def test_provider_resolution():
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, avail) == ["CPUExecutionProvider"]
    assert resolve_providers(["cuda", "CPU"], avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["CPUExecutionProvider"], avail) == ["CPUExecutionProvider"]
    with pytest.raises(PandError, match="'tensorrt' is not available.*Available: CUDAExecutionProvider"):
        resolve_providers(["tensorrt"], avail)


def test_tampered_or_missing_model_file_is_refused(bundle_copy):
    import onnx

    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    weights = max(onnx.load(str(model)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    at = data.find(weights[4096:4128]) + 16  # a byte inside the largest weight tensor
    data[at] ^= 0x01  # a silent one-bit corruption: the model still loads and runs
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx has sha256 .* the manifest expects"):
        Predictor.from_bundle(bundle_copy)
    assert Predictor.from_bundle(bundle_copy, verify=False).predict_logits(np.zeros((1, 64, 64, 3), np.uint8)).shape
    model.unlink()
    with pytest.raises(ArtifactError, match="model.onnx listed in the manifest is missing"):
        Predictor.from_bundle(bundle_copy)


def _edit_manifest(bundle, **changes):
    path = bundle / "manifest.json"
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def test_newer_format_version_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, format_version=99)
    with pytest.raises(ArtifactError, match="format_version 99, newer than this runtime understands \\(1\\)"):
        Predictor.from_bundle(bundle_copy)


def test_not_a_bundle_and_broken_manifest(tmp_path, bundle_copy):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Predictor.from_bundle(tmp_path)
    with pytest.raises(ArtifactError, match="bundle directory not found"):
        Predictor.from_bundle(tmp_path / "nope")
    d = json.loads((bundle_copy / "manifest.json").read_text())
    del d["preprocess"]
    (bundle_copy / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="lacks the field\\(s\\) preprocess"):
        load_bundle(bundle_copy)


def test_backend_choice_errors(rt_bundle):
    with pytest.raises(PandError, match="unknown backend 'cuda'"):
        Predictor.from_bundle(rt_bundle, backend="cuda")
    with pytest.raises(ArtifactError, match="has no tensorrt model \\(it has: onnx\\)"):
        Predictor.from_bundle(rt_bundle, backend="tensorrt")
    assert Predictor.from_bundle(rt_bundle, backend="auto").backend_name == "onnxruntime"


def test_trt_backend_without_tensorrt_names_the_extra(rt_bundle):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(PandError, match=r"pip install 'pand-runtime\[trt\]'"):
        TrtBackend(rt_bundle / "model.engine")


def test_engine_compatibility_check_names_both_sides():
    built = {"trt_version": "10.16.0", "compute_capability": "8.7", "gpu_name": "Orin"}
    check_engine_compat(built, {"trt_version": "10.16.0", "compute_capability": "8.7", "gpu_name": "Orin"})
    with pytest.raises(ArtifactError, match="built with TensorRT 10.16.0, this device runs TensorRT 11.1.0"):
        check_engine_compat(built, {"trt_version": "11.1.0", "compute_capability": "8.7"})
    with pytest.raises(ArtifactError, match="compute capability 8.7 \\(Orin\\).*compute capability 9.0"):
        check_engine_compat(built, {"trt_version": "10.16.0", "compute_capability": "9.0", "gpu_name": "H100"})


def test_wrong_model_input_shape_is_reported(rt_bundle):
    p = Predictor.from_bundle(rt_bundle)
    with pytest.raises(PandError, match=r"\(N, 3, 64, 64\)"):
        p.run(np.zeros((1, 3, 224, 224), np.float32))
    backend = OrtBackend(rt_bundle / "model.onnx")
    assert backend.fixed_batch is None and backend.input_name == "input"
