"""INT8 post-training static quantization to QDQ ONNX with ONNX Runtime (DEPLOY.md 3.4, 7 and 8).

Two flavours of the same recipe (QDQ format, per-channel symmetric int8 weights, calibration on training images
through the exact eval transform, ``quant_pre_process`` first):

* ``cpu``: asymmetric **uint8** activations. ORT's CPU provider runs these with its fast u8s8 kernels (about 3x
  faster than fp32 for ResNet-18 on an AVX-512 VNNI CPU, DEPLOY.md 8).
* ``tensorrt``: symmetric **int8** activations and weights. TensorRT only accepts zero zero-points ("TRT only
  supports symmetric quantization", NVIDIA/TensorRT#2774), so this is the file to build an engine from; on the ORT
  CPU provider it is *slower* than fp32, which is why it is not the CPU default.

The final classifier (the Gemm/MatMul that produces the logits) stays in float by default (``quantize_head=False``):
its input is the pooled feature vector, whose class-relevant differences are small next to its range, and an 8-bit
grid there costs far more top-1 agreement than the whole rest of the network, for a layer that is < 0.1% of the
FLOPs (the same reason Ultralytics keeps its head in higher precision, DEPLOY.md 1.1).
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from pand.errors import PandError

__all__ = ["INT8_TARGETS", "CALIB_METHODS", "Int8Recipe", "int8_recipe", "quantize_int8", "classifier_head_nodes"]

INT8_TARGETS = ("cpu", "tensorrt")
CALIB_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Int8Recipe:
    """The quantize_static settings of one target (recorded in the manifest)."""

    target: str
    activation_type: str  # "QUInt8" | "QInt8"
    weight_type: str
    activation_symmetric: bool
    weight_symmetric: bool
    per_channel: bool = True
    quant_format: str = "QDQ"
    float_nodes: Tuple[str, ...] = ()  # nodes left unquantized (the classifier head by default)


def int8_recipe(target: str) -> Int8Recipe:
    """The recipe of ``target`` (``cpu``: asymmetric uint8 activations; ``tensorrt``: symmetric int8 everywhere)."""
    if target == "cpu":
        return Int8Recipe("cpu", "QUInt8", "QInt8", activation_symmetric=False, weight_symmetric=True)
    if target == "tensorrt":
        return Int8Recipe("tensorrt", "QInt8", "QInt8", activation_symmetric=True, weight_symmetric=True)
    raise PandError(f"unknown INT8 target '{target}'. Valid: {', '.join(INT8_TARGETS)}")


class _Reader:
    """``CalibrationDataReader`` over an iterable of float32 NCHW batches (``get_next`` -> feed dict or None)."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self, it: Iterator[np.ndarray]):
                self.it = it

            def get_next(self) -> Optional[Dict[str, np.ndarray]]:
                b = next(self.it, None)
                return None if b is None else {input_name: np.ascontiguousarray(b, dtype=np.float32)}

        self.reader = Reader(iter(batches))


def classifier_head_nodes(model: "onnx.ModelProto") -> List[str]:  # noqa: F821 - onnx imported lazily
    """Names of the Gemm/MatMul node(s) that compute the model's first output, looking back through Add, Reshape,
    Flatten and Identity (the logits layer of a classifier); empty if there is none."""
    producers = {o: n for n in model.graph.node for o in n.output}
    out: List[str] = []
    todo = [model.graph.output[0].name]
    while todo:
        node = producers.get(todo.pop())
        if node is None:
            continue
        if node.op_type in ("Gemm", "MatMul"):
            out.append(node.name)
        elif node.op_type in ("Add", "Reshape", "Flatten", "Identity"):
            todo.extend(i for i in node.input if i in producers)
    return out


def quantize_int8(src: Union[str, Path], dst: Union[str, Path], batches: Iterable[np.ndarray], target: str = "cpu",
                  method: str = "minmax", input_name: str = "input", quantize_head: bool = False) -> Int8Recipe:
    """Quantize an fp32 ONNX classifier to a QDQ int8 model.

    Args:
        src: fp32 ONNX file.
        dst: output QDQ ONNX file.
        batches: calibration inputs, float32 ``[B, 3, S, S]`` (training images through the eval transform).
        target: ``cpu`` or ``tensorrt`` (see the module docstring).
        method: calibration ``minmax`` | ``entropy`` | ``percentile``.
        input_name: the model's input name.
        quantize_head: also quantize the final classifier layer (default: keep it in float).

    Returns:
        The :class:`Int8Recipe` used (``float_nodes`` lists the nodes left in float).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    recipe = int8_recipe(target)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise PandError(f"unknown calibration method '{method}'. Valid: {', '.join(CALIB_METHODS)}")
    with tempfile.TemporaryDirectory(prefix="pand-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(src), str(pre))  # symbolic shape inference + ORT optimisation + ONNX shape inference
        import onnx

        keep_float = [] if quantize_head else classifier_head_nodes(onnx.load(str(pre)))
        quantize_static(
            str(pre), str(dst), _Reader(input_name, batches).reader,
            quant_format=QuantFormat.QDQ,
            per_channel=recipe.per_channel,
            activation_type=getattr(QuantType, recipe.activation_type),
            weight_type=getattr(QuantType, recipe.weight_type),
            calibrate_method=methods[method],
            nodes_to_exclude=keep_float,
            extra_options={"ActivationSymmetric": recipe.activation_symmetric,
                           "WeightSymmetric": recipe.weight_symmetric},
        )
    return dataclasses.replace(recipe, float_nodes=tuple(keep_float))
