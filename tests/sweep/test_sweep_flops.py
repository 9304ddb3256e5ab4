"""MACs counted from an ONNX graph (pand.sweep.flops) against a hand-computed tiny model."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pand.sweep.flops import onnx_macs


def _init(name, shape):
    return numpy_helper.from_array(np.zeros(shape, dtype=np.float32), name)


def tiny_model(batch="N", with_grouped=True):
    """x [N, 3, 8, 8] -> Conv 3->4 (3x3, pad 1) -> [grouped Conv 4->4, groups 4, 3x3, pad 1] -> Conv 4->2 (1x1,
    stride 2) -> Flatten [N, 32] -> Gemm (transB) -> [N, 10] -> MatMul [10, 5] -> [N, 5]."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"])]
    inits = [_init("w1", (4, 3, 3, 3)), _init("w3", (2, 4, 1, 1)), _init("wg", (10, 32)), _init("bg", (10,)),
             _init("wm", (10, 5))]
    last = "r1"
    if with_grouped:
        nodes.append(helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=4))
        inits.append(_init("w2", (4, 1, 3, 3)))
        last = "c2"
    nodes += [helper.make_node("Conv", [last, "w3"], ["c3"], strides=[2, 2]),
              helper.make_node("Flatten", ["c3"], ["f"], axis=1),
              helper.make_node("Gemm", ["f", "wg", "bg"], ["g"], transB=1),
              helper.make_node("MatMul", ["g", "wm"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_macs_match_hand_count():
    conv1 = (4 * 8 * 8) * (3 * 3 * 3)  # C_out*H*W outputs, each C_in*k*k MACs = 6912
    grouped = (4 * 8 * 8) * (1 * 3 * 3)  # groups=4: each output sees C_in/g = 1 channel = 2304
    conv3 = (2 * 4 * 4) * (4 * 1 * 1)  # stride 2 -> 4x4 = 128
    gemm = 10 * 32  # [1, 32] x [32, 10]
    matmul = 5 * 10  # [1, 10] x [10, 5]
    assert onnx_macs(tiny_model()) == conv1 + grouped + conv3 + gemm + matmul == 9714
    # the grouped conv's share is exactly its hand count (groups are not mistaken for full convolutions)
    assert onnx_macs(tiny_model()) - onnx_macs(tiny_model(with_grouped=False)) == grouped


def test_macs_are_per_image_for_symbolic_and_fixed_batch(tmp_path):
    dyn = onnx_macs(tiny_model("batch"))
    assert dyn == onnx_macs(tiny_model(1))
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(), str(path))
    assert onnx_macs(path) == dyn  # from a file as well


def test_unknown_shape_names_the_node():
    model = tiny_model()
    # a MatMul whose second operand has no known shape: the count refuses instead of guessing
    model.graph.node.append(helper.make_node("MatMul", ["y", "mystery"], ["z"], name="odd_matmul"))
    model.graph.input.append(helper.make_tensor_value_info("mystery", TensorProto.FLOAT, None))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    with pytest.raises(ValueError, match="odd_matmul"):
        onnx_macs(model)
