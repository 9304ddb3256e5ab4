"""pand-export precisions: fp16 with fp32 I/O, INT8 QDQ in its CPU (asymmetric u8) and TensorRT (symmetric) flavours."""
import numpy as np
import onnx

import bundle_factory as bf
from pand_runtime import load_manifest


def test_fp16_keeps_fp32_io_and_passes_its_parity(run_dir, tmp_path):
    res = bf.export(run_dir, tmp_path / "fp16", precision="fp16", parity_images=48)
    assert res.valid, res.failures
    model = onnx.load(str(res.bundle / "model.onnx"))
    f16 = onnx.TensorProto.FLOAT16
    assert sum(i.data_type == f16 for i in model.graph.initializer) > 10
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    par = load_manifest(res.bundle).parity["onnxruntime"]
    assert 0 < par["mean_abs"] <= 1e-2 and par["tolerance"]["mean_abs"] == 1e-2


def _zero_points(model):
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]


def test_int8_cpu_is_qdq_with_asymmetric_uint8_activations(int8_cpu_bundle):
    m = load_manifest(int8_cpu_bundle.bundle)
    assert m.precision == "int8" and m.int8_target == "cpu"
    info = m.models[0].info["int8"]
    assert info["calibration_split"] == "train" and info["calibration_images"] == 32 and info["per_channel"]
    model = onnx.load(str(int8_cpu_bundle.bundle / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    zps = _zero_points(model)
    assert zps and all(z.dtype == np.uint8 for z in zps)
    assert any(int(z.max()) != 0 for z in zps)  # asymmetric
    # the classifier head stays float: its weight is a plain fp32 initializer, not a DequantizeLinear output
    assert info["float_nodes"] == ["/linear_cls/Gemm"]
    (gemm,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    inits = {i.name: i for i in model.graph.initializer}
    assert inits[gemm.input[1]].data_type == onnx.TensorProto.FLOAT
    # A random-init student has near-tie logits, so top-1 agreement depends on the CPU's int8 kernels (which side
    # of a tie a rounding lands on); the logits themselves must stay close on any CPU.
    assert _mean_logit_cosine(int8_cpu_bundle.bundle) >= 0.99


def _mean_logit_cosine(bundle):
    from pand_runtime import Predictor
    from pand_runtime.preprocess import normalize_u8

    p = Predictor.from_bundle(bundle, allow_invalid=True)
    ref = p.reference()
    out, want = p.run(normalize_u8(ref["images_u8"], p.spec)), ref["logits"]
    return float(np.mean((out * want).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(want, axis=1))))


def test_int8_tensorrt_flavour_is_symmetric_and_calibrates_on_train(run_dir, tmp_path, monkeypatch):
    import pand_export.exporter as ex

    calls = []
    real = ex.load_split_images

    def spy(cfg, split, n, seed, class_names):
        calls.append((split, n))
        return real(cfg, split, n, seed, class_names)

    monkeypatch.setattr(ex, "load_split_images", spy)
    res = bf.export(run_dir, tmp_path / "int8-trt", precision="int8", target="tensorrt", parity_images=16,
                    calib_images=8, min_agreement=0.0, max_acc_drop=1.0, quantize_head=True)
    assert calls == [("test", 16), ("train", 8)]  # parity on test, calibration on train, never the other way
    model = onnx.load(str(res.bundle / "model.onnx"))
    zps = _zero_points(model)
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)  # TensorRT needs zero zero-points
    m = load_manifest(res.bundle)
    assert m.int8_target == "tensorrt" and m.models[0].info["int8"]["float_nodes"] == []
    # float biases: TensorRT's DequantizeLinear takes INT8 only, so no INT32 bias may feed one (issue 17 item 1)
    assert m.models[0].info["int8"]["quantize_bias"] is False
    inits = {i.name: i.data_type for i in model.graph.initializer}
    dq_types = {inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    assert dq_types == {onnx.TensorProto.INT8}
    assert m.parity["onnxruntime"]["n"] == 16  # ONNX Runtime ran it
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    (gemm,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert producers[gemm.input[0]] == producers[gemm.input[1]] == "DequantizeLinear"  # --quantize-head


def test_classifier_head_nodes_follow_the_logits_back():
    from onnx import TensorProto, helper

    from pand_export.quantize import classifier_head_nodes

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "W"], ["m"], name="fc"),
             helper.make_node("Add", ["m", "b"], ["logits"], name="bias")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])])
    assert classifier_head_nodes(helper.make_model(graph)) == ["fc"]
