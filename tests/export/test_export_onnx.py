"""pand-export to ONNX: the bundle, the manifest, a real dynamic batch axis, fp16/int8 conversions, parity gating."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import bundle_factory as bf
from pand_export import ExportOptions, export_bundle
from pand_export.exporter import default_output_dir
from pand_export.onnx_export import onnx_io_specs, torch_to_onnx
from pand.data import preprocess_spec_from_student
from pand.errors import ArtifactError
from pand.utils.io import load_tensors, sha256_file
from pand_runtime import Predictor, load_manifest
from pand_runtime.manifest import FORMAT_VERSION


def _student(run_dir):
    from pand_export.source import load_source

    return load_source(run_dir)


def test_fp32_bundle_manifest_describes_model_and_eval_transform(fp32_bundle, run_dir):
    assert fp32_bundle.valid and fp32_bundle.failures == []
    b = fp32_bundle.bundle
    m = load_manifest(b)
    raw = json.loads((b / "manifest.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION and raw["valid"] is True
    _, meta = load_tensors(run_dir / "student.safetensors")
    assert m.class_names == meta["class_names"] and m.num_classes == 24 and m.arch == "resnet18"
    from pand.config import load_config

    pp = preprocess_spec_from_student(load_config(run_dir / "config.yaml").student).to_dict()
    for k in ("image_size", "resize_size", "interpolation"):
        assert getattr(m.preprocess, k) == pp[k]
    assert m.preprocess.mean == pytest.approx(pp["mean"]) and m.preprocess.std == pytest.approx(pp["std"])
    assert (m.preprocess.image_size, m.preprocess.resize_size) == (64, 72)
    assert m.preprocess.color_order == "RGB" and m.preprocess.layout == "NCHW"
    assert (m.input.name, m.input.shape, m.input.dtype) == ("input", ["batch", 3, 64, 64], "float32")
    assert (m.output.name, m.output.shape) == ("logits", ["batch", 24])
    assert m.precision == "fp32" and m.opset == 18 and m.int8_target is None
    assert m.source["sha256"] == sha256_file(run_dir / "student.safetensors")
    (mf,) = m.models
    assert mf.file == "model.onnx" and mf.sha256 == sha256_file(b / "model.onnx")
    assert {"torch", "onnx", "onnxruntime", "numpy"} <= set(m.versions) and m.versions["onnxruntime"] == ort.__version__
    # parity on the whole tiny test split (24 classes x 6), fp32 is strict
    p = m.parity
    assert p["split"] == "test" and p["n_images"] == 144
    assert p["preprocess"]["max_abs_diff"] == 0.0
    assert p["onnxruntime"]["max_abs"] < 1e-3 and p["onnxruntime"]["top1_agreement"] == 1.0
    assert p["onnxruntime"]["mean_cosine"] > 0.99999 and p["onnxruntime"]["passed"]


def test_reference_npz_holds_the_torch_outputs_of_the_stored_images(fp32_bundle, run_dir):
    ref = dict(np.load(fp32_bundle.bundle / "reference.npz", allow_pickle=False))
    assert ref["images_u8"].shape == (144, 64, 64, 3) and ref["images_u8"].dtype == np.uint8
    assert ref["logits"].shape == (144, 24) and ref["labels"].shape == (144,)
    src = _student(run_dir)
    m = load_manifest(fp32_bundle.bundle)
    x = (ref["images_u8"][:8].astype(np.float32) / 255 - np.array(m.preprocess.mean, np.float32)) / np.array(
        m.preprocess.std, np.float32)
    with torch.no_grad():
        logits = src.model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    np.testing.assert_allclose(logits, ref["logits"][:8], atol=1e-4)
    # the stored images are test images, not training images
    train = {p for p, _ in __import__("pand.data", fromlist=["build_splits"]).build_splits(
        src.cfg.data, cache_dir=src.cfg.cache_dir).train.samples}
    assert not train & set(ref["paths"].tolist())


def test_onnx_batch_axis_is_really_dynamic(fp32_bundle, run_dir):
    path = str(fp32_bundle.bundle / "model.onnx")
    model = onnx.load(path)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {p.key for p in model.metadata_props} >= {"pand.class_names", "pand.preprocess"}
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    src = _student(run_dir)
    for n in (1, 3, 5):
        x = torch.randn(n, 3, 64, 64)
        out = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(out, src.model(x).numpy(), atol=1e-3, rtol=1e-3)


def test_example_batch_of_one_does_not_specialise_the_batch_axis(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2)).eval()
    for exporter in ("torchscript", "dynamo"):
        p = tmp_path / f"{exporter}.onnx"
        torch_to_onnx(net, p, image_size=16, batch=1, dynamic=True, exporter=exporter)
        ins, outs = onnx_io_specs(p)
        assert isinstance(ins[0].shape[0], str), exporter  # symbolic, not 1
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        x = np.random.rand(4, 3, 16, 16).astype(np.float32)
        with torch.no_grad():
            np.testing.assert_allclose(sess.run(None, {ins[0].name: x})[0], net(torch.from_numpy(x)).numpy(),
                                       atol=1e-5)
    static = tmp_path / "static.onnx"
    torch_to_onnx(net, static, image_size=16, batch=2, dynamic=False)
    assert onnx_io_specs(static)[0][0].shape == [2, 3, 16, 16]


def test_static_batch_bundle_and_predictor_padding(run_dir, tmp_path):
    res = bf.export(run_dir, tmp_path / "static", precision="fp32", dynamic_batch=False, batch=2, parity_images=5,
                    simplify=True)
    assert res.valid  # 5 images through a batch-2 model: the last chunk is padded
    m = load_manifest(res.bundle)
    assert m.models[0].info["simplified"] is True
    assert m.input.shape == [2, 3, 64, 64] and m.dynamic_batch is False and m.max_batch == 2
    p = Predictor.from_bundle(res.bundle)
    ref = p.reference()
    from pand_runtime.preprocess import normalize_u8

    out = p.run(normalize_u8(ref["images_u8"][:3], p.spec))
    np.testing.assert_allclose(out, ref["logits"][:3], atol=1e-3)


def test_parity_failure_writes_an_invalid_bundle_and_exits_1(run_dir, tmp_path, monkeypatch):
    import pand_export.exporter as ex
    from click.testing import CliRunner

    from pand_export.cli import cli

    real = ex.torch_to_onnx

    def broken_export(model, path, *a, **kw):  # an exporter bug: the graph computes something else
        import copy

        bad = copy.deepcopy(model)
        with torch.no_grad():
            bad.linear_cls.bias += torch.linspace(0, 0.5, bad.linear_cls.bias.numel())
        return real(bad, path, *a, **kw)

    monkeypatch.setattr(ex, "torch_to_onnx", broken_export)
    out = tmp_path / "bad"
    r = CliRunner().invoke(cli, [str(run_dir), "--output", str(out), "--parity-images", "16"])
    assert r.exit_code == 1, r.output
    assert "FAILED its parity check" in r.output and "max |logit diff|" in r.output
    m = load_manifest(out)
    assert m.valid is False and m.parity["onnxruntime"]["passed"] is False
    with pytest.raises(ArtifactError, match="marked invalid"):
        Predictor.from_bundle(out)
    assert Predictor.from_bundle(out, allow_invalid=True).precision == "fp32"


def test_trt_without_tensorrt_fails_cleanly_and_writes_nothing(run_dir, tmp_path):
    from click.testing import CliRunner

    from pand_export.cli import cli

    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    out = tmp_path / "trt"
    for fmt in ("trt", "all"):
        r = CliRunner().invoke(cli, [str(run_dir), "--format", fmt, "--output", str(out)])
        assert r.exit_code == 2 and "TensorRT" in r.output and "--format onnx" in r.output, r.output
        assert not out.exists() and list(tmp_path.iterdir()) == []


def test_output_that_is_not_a_bundle_is_never_replaced(run_dir, tmp_path):
    from pand.errors import PandError

    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(PandError, match="exists and is not a pand bundle"):
        export_bundle(run_dir, ExportOptions(output=precious, parity_images=4))
    assert (precious / "todo.txt").read_text() == "keep me"


@pytest.mark.parametrize("args, msg", [
    (["--format", "onnx", "--precision", "fp32", "--target", "cpu"], "only applies to --precision int8"),
    (["--opset", "7"], "--opset 7 is out of range"),
    (["--batch", "8", "--max-batch", "4"], "larger than --max-batch"),
])
def test_bad_option_combinations_are_refused(run_dir, tmp_path, args, msg):
    from click.testing import CliRunner

    from pand_export.cli import cli

    r = CliRunner().invoke(cli, [str(run_dir), "--output", str(tmp_path / "x"), *args])
    assert r.exit_code == 2 and msg in r.output, r.output
    assert not (tmp_path / "x").exists()


def test_checkpoint_source_default_output_and_atomic_replacement(run_dir, tmp_path, monkeypatch):
    import shutil

    ck_dir = tmp_path / "ckpt"
    ck_dir.mkdir()
    shutil.copy(run_dir / "student.safetensors", ck_dir / "student.safetensors")
    shutil.copy(run_dir / "config.yaml", ck_dir / "config.yaml")
    ck = ck_dir / "student.safetensors"
    opts = ExportOptions(parity_images=4)
    assert default_output_dir(ck, opts) == ck_dir / "export" / "onnx-fp32"
    res = export_bundle(ck, opts)
    assert res.valid and res.bundle == ck_dir / "export" / "onnx-fp32"
    before = (res.bundle / "manifest.json").read_text()

    import pand_export.exporter as ex

    def boom(ctx):
        (ctx.staging / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(ex, "EXPORT_FORMATS", (ex.dataclasses.replace(ex.EXPORT_FORMATS[0], fn=boom),))
    with pytest.raises(RuntimeError, match="interrupted"):
        export_bundle(ck, opts)
    assert (res.bundle / "manifest.json").read_text() == before  # the old bundle is untouched
    assert sorted(p.name for p in res.bundle.parent.iterdir()) == ["onnx-fp32"]  # no staging left behind


def test_checkpoint_that_does_not_fit_its_arch_is_refused(run_dir, tmp_path):
    import shutil

    from pand.utils.io import save_tensors

    bad = tmp_path / "run"
    bad.mkdir()
    shutil.copy(run_dir / "config.yaml", bad / "config.yaml")
    tensors, meta = load_tensors(run_dir / "student.safetensors")
    save_tensors(bad / "student.safetensors", tensors, {**meta, "arch": "mobilenet_v2"})
    with pytest.raises(ArtifactError, match="does not fit a 'mobilenet_v2' student"):
        export_bundle(bad, ExportOptions(parity_images=4))
