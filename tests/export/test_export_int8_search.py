"""Accuracy-aware INT8 (issue 18): an activation with a huge outlier ruins plain INT8; the search finds the layers
around it, keeps them in float and meets the target; both flavours; the manifest and pand-bench list the float
layers; the runtime warns when an int8 bundle runs on a CPU with other int8 kernels. The TensorRT flavour has float
biases (no INT32 input to any DequantizeLinear, issue 17 item 1)."""
import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import bundle_factory as bf
from pand_runtime import load_manifest
from pand_runtime.metrics import TOLERANCES, Tolerance

OUTLIER = 1e4


def _outlier_model(path, seed=0, batch="batch"):
    """conv(3->8) -> relu -> conv(8->8) -> relu -> GAP -> flatten -> gemm(8->4). Channel 0 of the first conv is a
    constant OUTLIER (bias) that the second conv ignores (zero weights): the float function does not see it, but an
    8-bit grid spanning [0, OUTLIER] rounds every other channel of that activation to zero."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    w1[0] = 0.0
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    b1[0] = OUTLIER
    w2 = rng.normal(0, 0.5, (8, 8, 3, 3)).astype(np.float32)
    w2[:, 0] = 0.0
    b2 = rng.normal(0, 0.1, 8).astype(np.float32)
    wf = rng.normal(0, 1.0, (4, 8)).astype(np.float32)
    wf -= wf.mean(1, keepdims=True)  # class scores from differences between features, not their common level
    bf_ = np.zeros(4, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (wf, "wf"),
                                                         (bf_, "bf"))]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _images(rng, n):
    """Noise images with a per-image colour shift (so that pooled features, and the argmax, differ per image)."""
    return (rng.normal(0, 1, (n, 3, 8, 8)) + rng.normal(0, 2, (n, 3, 1, 1))).astype(np.float32)


def _dq_input_types(model):
    """Element types of the first input of every DequantizeLinear (initializers only: weights and biases)."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    return [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_search_keeps_the_outlier_layers_in_float_and_meets_the_target(tmp_path, target, capsys):
    from pand_export.int8_search import accuracy_aware_int8, fallback_units, run_onnx
    from pand_export.quantize import Int8Quantizer

    src = _outlier_model(tmp_path / "fp32.onnx")
    rng = np.random.default_rng(1)
    calib = [_images(rng, 16) for _ in range(2)]
    x = _images(rng, 96)
    ref = run_onnx(src, x)
    tol = Tolerance(min_agreement=0.95)
    with Int8Quantizer(src, calib, target=target) as q:
        assert q.head_nodes == ["head"]
        units = {u.name: u.nodes for u in fallback_units(q.model, q.head_nodes)}
        assert units["c1"] == ["conv1", "relu1", "conv2"]  # the activation through its Relu, producer + consumer
        recipe, report = accuracy_aware_int8(q, tmp_path / "int8.onnx", x, ref, None, tol, q.head_nodes)
    bar = capsys.readouterr().err  # the leave-one-out loop shows its progress, one step per unit
    assert "INT8 sensitivity:" in bar and f"0/{len(units)} [" in bar
    steps = report["steps"]
    assert not steps[0]["passed"] and steps[0]["agreement"] < 0.9  # plain INT8 is ruined by the outlier
    assert report["sensitivity"][0]["unit"] == "c1"  # the most sensitive unit is the outlier's
    chosen = steps[report["chosen_step"]]
    assert report["passed"] and chosen["passed"] and chosen["agreement"] >= 0.95 and chosen["n_units"] == 1
    assert set(recipe.float_nodes) == {"head", "conv1", "relu1", "conv2"} == set(report["float_nodes"])
    assert all(s["p50_ms"] > 0 for s in steps)
    out = onnx.load(str(tmp_path / "int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in out.graph.node)  # the rest is still quantized
    conv_w = {n.name: n.input[1] for n in out.graph.node if n.op_type == "Conv"}
    inits = {i.name for i in out.graph.initializer}
    assert conv_w["conv1"] in inits and conv_w["conv2"] in inits  # float weights, no DequantizeLinear in between
    agree = np.mean(run_onnx(tmp_path / "int8.onnx", x).argmax(1) == ref.argmax(1))
    assert agree == pytest.approx(chosen["agreement"])


def test_search_runs_a_static_batch_model(tmp_path):
    from pand_export.int8_search import accuracy_aware_int8, run_onnx
    from pand_export.quantize import Int8Quantizer

    src = _outlier_model(tmp_path / "fp32.onnx", batch=4)
    rng = np.random.default_rng(3)
    x = _images(rng, 30)  # not a multiple of 4: the last chunk is padded
    ref = run_onnx(src, x)
    with Int8Quantizer(src, [_images(rng, 4) for _ in range(4)]) as q:
        _, report = accuracy_aware_int8(q, tmp_path / "int8.onnx", x, ref, None, Tolerance(min_agreement=0.95),
                                        q.head_nodes)
    assert report["passed"] and all(s["p50_ms"] > 0 for s in report["steps"])


def test_tensorrt_flavour_keeps_biases_float_and_ort_runs_it(tmp_path):
    from pand_export.int8_search import run_onnx
    from pand_export.quantize import Int8Quantizer

    src = _outlier_model(tmp_path / "fp32.onnx")
    calib = [np.random.default_rng(2).normal(0, 1, (8, 3, 8, 8)).astype(np.float32)]
    with Int8Quantizer(src, calib, target="tensorrt") as q:
        trt = q.quantize(tmp_path / "trt.onnx", [])
    with Int8Quantizer(src, calib, target="cpu") as q:
        cpu = q.quantize(tmp_path / "cpu.onnx", [])
    assert not trt.quantize_bias and cpu.quantize_bias
    trt_types = _dq_input_types(onnx.load(str(tmp_path / "trt.onnx")))
    assert trt_types and TensorProto.INT32 not in trt_types and set(trt_types) == {TensorProto.INT8}
    assert TensorProto.INT32 in _dq_input_types(onnx.load(str(tmp_path / "cpu.onnx")))  # the CPU flavour's biases
    assert run_onnx(tmp_path / "trt.onnx", calib[0]).shape == (8, 4)


def test_quantizer_calibrates_once_and_still_works_without_a_cache(tmp_path):
    """onnxruntime >= 1.23: the ranges are computed once and reused (same model twice); older ones have no
    calibration cache and recalibrate on every call, with the same result."""
    from pand_export.quantize import Int8Quantizer

    src = _outlier_model(tmp_path / "fp32.onnx")
    calib = [_images(np.random.default_rng(4), 8)]

    def scales(path):
        return sorted(float(numpy_helper.to_array(i).ravel()[0]) for i in onnx.load(str(path)).graph.initializer
                      if i.name.endswith("_scale"))

    with Int8Quantizer(src, calib) as q:
        q.quantize(tmp_path / "a.onnx", ["head"])
        if q._cache is not None:
            assert q._cache.is_file()
            q.batches = []  # a second call must not need the images again
        q.quantize(tmp_path / "b.onnx", ["head"])
    with Int8Quantizer(src, calib) as q:
        q._cache = None
        q.quantize(tmp_path / "c.onnx", ["head"])
    assert scales(tmp_path / "a.onnx") == scales(tmp_path / "b.onnx") == scales(tmp_path / "c.onnx")


def test_entropy_calibration_differs_from_minmax(tmp_path):
    """quantize_static's own entropy settings (128 bins over 128 quantized bins) reduce to minmax; ours do not."""
    from pand_export.quantize import Int8Quantizer

    src = _outlier_model(tmp_path / "fp32.onnx")
    rng = np.random.default_rng(5)
    calib = [_images(rng, 16) for _ in range(2)]
    out = {}
    for method in ("minmax", "entropy"):
        with Int8Quantizer(src, calib, method=method) as q:
            q.quantize(tmp_path / f"{method}.onnx", ["head"])
        inits = onnx.load(str(tmp_path / f"{method}.onnx")).graph.initializer
        out[method] = {i.name: float(numpy_helper.to_array(i).ravel()[0]) for i in inits if i.name.endswith("_scale")}
    assert out["minmax"].keys() == out["entropy"].keys()
    assert any(abs(out["minmax"][k] - out["entropy"][k]) > 1e-6 for k in out["minmax"])


def test_fallback_schedule_is_fewest_first():
    from pand_export.int8_search import fallback_schedule

    assert fallback_schedule(3) == [1, 2, 3]
    assert fallback_schedule(30) == [1, 2, 3, 4, 5, 6, 8, 12, 18, 27, 30]


def test_reduce_range_is_on_by_default_only_where_int8_kernels_saturate(monkeypatch):
    import pand_runtime.int8_check as ic
    from pand_export.quantize import int8_recipe

    monkeypatch.setattr(ic, "cpu_features", lambda cpuinfo_text=None: frozenset({"avx2", "fma"}))  # Zen 3
    assert int8_recipe("cpu").reduce_range and not int8_recipe("tensorrt").reduce_range
    assert not int8_recipe("cpu", reduce_range=False).reduce_range
    monkeypatch.setattr(ic, "cpu_features", lambda cpuinfo_text=None: frozenset({"avx2", "avx512bw", "avx512_vnni"}))
    assert not int8_recipe("cpu").reduce_range and int8_recipe("cpu", reduce_range=True).reduce_range
    assert not int8_recipe("tensorrt").quantize_bias and int8_recipe("cpu").quantize_bias


def test_int8_target_defaults_to_99_percent():
    assert TOLERANCES["int8"].min_agreement == 0.99


def test_int8_cpu_warning_names_the_kernel_paths():
    from pand_runtime.int8_check import INT8_PATHS, RECORDED_FEATURES, int8_cpu_warning, int8_kernel_path, validated_cpu

    zen3 = {"avx2", "fma", "sse4_2"}
    zen4 = zen3 | {"avx512f", "avx512bw", "avx512_vnni"}
    spr = zen4 | {"amx_tile", "amx_int8", "avx_vnni"}
    assert [int8_kernel_path(f) for f in (zen3, zen4, spr, {"asimd", "asimddp"})] == \
        ["avx2", "avx512_vnni", "amx", "arm_dotprod"]
    info = {"validated_cpu": {"model_name": "AMD EPYC 9R14", "int8_path": "avx512_vnni"}, "reduce_range": False}
    assert int8_cpu_warning(info, zen4) is None
    msg = int8_cpu_warning(info, zen3)
    assert "avx512_vnni" in msg and "'avx2'" in msg and "saturat" in msg and "--reduce-range" in msg
    assert "saturat" not in int8_cpu_warning({**info, "reduce_range": True}, zen3)
    assert int8_cpu_warning(info, spr) is not None
    assert int8_cpu_warning({}, zen3) is None  # bundles from before the field: no warning
    here = validated_cpu()
    assert here["int8_path"] in INT8_PATHS and set(here["features"]) <= set(RECORDED_FEATURES)


def test_export_with_an_outlier_layer_lists_its_float_layers_in_the_manifest_and_bench(tmp_path, data_cache,
                                                                                        monkeypatch):
    """A ResNet-18 student whose layer3.0.conv1 activation has one channel at OUTLIER (its BN bias), ignored by
    conv2 (zero weights): same float function, ruined plain INT8. The default export repairs it."""
    import torch

    def outlier(model):
        blk = model.backbone.layer3[0]
        with torch.no_grad():
            blk.bn1.bias[0] = OUTLIER
            blk.conv2.weight[:, 0] = 0.0

    run = bf.make_run_dir(tmp_path / "run", data_cache, mutate=outlier)
    res = bf.export(run, tmp_path / "int8", precision="int8", target="cpu", parity_images=48, calib_images=16,
                    min_agreement=0.9, max_acc_drop=1.0)
    assert res.valid, res.failures
    m = load_manifest(res.bundle)
    info = m.models[0].info["int8"]
    search = info["accuracy_aware"]
    steps = search["steps"]
    assert not steps[0]["passed"]  # plain INT8 fails the target
    assert search["passed"] and steps[search["chosen_step"]]["agreement"] >= 0.9
    assert m.parity["onnxruntime"]["top1_agreement"] == pytest.approx(steps[search["chosen_step"]]["agreement"])
    fl = info["float_nodes"]
    assert fl[0] == "/linear_cls/Gemm" and fl == search["float_nodes"]
    assert {"/backbone/layer3/layer3.0/conv1/Conv", "/backbone/layer3/layer3.0/conv2/Conv"} <= set(fl)
    from pand_runtime.int8_check import int8_kernels_saturate

    assert info["validated_cpu"]["int8_path"] and info["reduce_range"] is int8_kernels_saturate()  # auto default
    assert search["fp32_p50_ms"] > 0
    # pand-bench shows the float layers and the agreement
    from pand_runtime.bench import bench_bundle
    from pand_runtime.bench_report import render_markdown, render_text
    from pand_runtime.bench_rows import BenchOptions

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same CPU as the export: no Int8CpuWarning
        rows = bench_bundle(res.bundle, BenchOptions(iterations=3, min_time=0.0, warmup_ms=0.0))
    assert rows[0].float_layers == fl and rows[0].agreement is not None
    text = render_text(rows)
    assert "float layers" in text and f"{len(fl)} layer(s) kept in float" in text and fl[1] in text
    assert fl[1] in render_markdown(rows)
    # on a CPU with other int8 kernels (here: a Zen 3 without VNNI) the runtime warns
    import pand_runtime.int8_check as ic
    from pand_runtime import Predictor

    monkeypatch.setattr(ic, "cpu_features", lambda cpuinfo_text=None: frozenset({"avx2", "fma"}))
    expect = "avx2" if info["validated_cpu"]["int8_path"] != "avx2" else None
    if expect:
        with pytest.warns(ic.Int8CpuWarning, match="saturating int16"):
            Predictor.from_bundle(res.bundle).close()
    manifest = json.loads((res.bundle / "manifest.json").read_text())
    assert manifest["models"][0]["info"]["int8"]["accuracy_aware"]["steps"][0]["float_nodes"] == ["/linear_cls/Gemm"]


def test_cli_int8_flags_reach_the_manifest(run_dir, tmp_path):
    from click.testing import CliRunner

    from pand_export.cli import cli

    out = tmp_path / "plain"
    r = CliRunner().invoke(cli, [str(run_dir), "--precision", "int8", "--plain-int8", "--reduce-range",
                                 "--calib-images", "8", "--parity-images", "16", "--min-agreement", "0",
                                 "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "int8: layers kept in float: /linear_cls/Gemm" in r.output
    m = load_manifest(out)
    info = m.models[0].info["int8"]
    assert info["reduce_range"] is True and info["accuracy_aware"] is None and info["calibration_images"] == 8
    assert m.export_args["accuracy_aware"] is False and m.parity["onnxruntime"]["tolerance"]["min_agreement"] == 0
    out = tmp_path / "aware"
    r = CliRunner().invoke(cli, [str(run_dir), "--precision", "int8", "--calib-images", "8", "--parity-images",
                                 "16", "--min-agreement", "0", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "agreement" in r.output and "after 1 search step(s)" in r.output  # the target is met at once
    assert load_manifest(out).models[0].info["int8"]["accuracy_aware"]["chosen_step"] == 0
