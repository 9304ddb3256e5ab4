"""INT8 post-training static quantization to QDQ ONNX with ONNX Runtime (docs/deployment.md, "INT8: two QDQ flavours").

Two flavours of the same recipe (QDQ format, per-channel symmetric int8 weights, calibration on training images
through the exact eval transform, ``quant_pre_process`` first):

* ``cpu``: asymmetric **uint8** activations. ORT's CPU provider runs these with its fast u8s8 kernels (about 3x
  faster than fp32 for ResNet-18 at batch 1, measured on a 2-core AVX-512 VNNI CPU).
* ``tensorrt``: symmetric **int8** activations and weights, and **float biases** (``QuantizeBias=False``):
  TensorRT only accepts zero zero-points ("TRT only supports symmetric quantization", NVIDIA/TensorRT#2774) and its
  DequantizeLinear takes INT8/FP8/INT4 inputs only, so an INT32 bias DequantizeLinear fails at parse
  (NVIDIA/TensorRT#4542). This is the file to build an engine from; on the ORT CPU provider it is *slower* than
  fp32, which is why it is not the CPU default.

``reduce_range`` (7-bit weights) exists for x86 CPUs without an int8 dot-product instruction (AVX2 only, e.g. AMD
Zen 2/3): ONNX Runtime's u8s8 kernels there add two u8 x s8 products into a saturating int16 (``vpmaddubsw``), which
8-bit weights can overflow (microsoft/onnxruntime#12088, ORT's docs recommend ``reduce_range`` there). On a CPU with
VNNI or AMX the sums are exact and 7-bit weights only cost agreement (measured with ``bench/int8.py`` on an AVX-512
VNNI EPYC: -0.6 to -2.1 points at every calibration size with minmax, no speed gain). The default is therefore
*auto*: on for the CPU flavour when the export machine's int8 kernels saturate (the parity check then measures the
same kernels a deployment on such a CPU runs), off otherwise and for TensorRT. The bundle records the CPU features
it was validated on, and the runtime warns when it runs on a CPU whose int8 kernels differ
(:mod:`pand_runtime.int8_check`).

The final classifier (the Gemm/MatMul that produces the logits) stays in float by default (``quantize_head=False``):
its input is the pooled feature vector, whose class-relevant differences are small next to its range, and an 8-bit
grid there costs far more top-1 agreement than the whole rest of the network, for a layer that is < 0.1% of the
FLOPs (Ultralytics keeps its detection head in higher precision for the same reason).

:class:`Int8Quantizer` pre-processes and calibrates once and then quantizes as often as asked with different sets of
float nodes: the accuracy-aware search of :mod:`pand_export.int8_search` builds on it.
"""
from __future__ import annotations

import dataclasses
import inspect
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from pand.errors import PandError
from pand_runtime.int8_check import int8_kernels_saturate

__all__ = ["INT8_TARGETS", "CALIB_METHODS", "DEFAULT_REDUCE_RANGE", "Int8Recipe", "int8_recipe", "Int8Quantizer",
           "quantize_int8", "classifier_head_nodes"]

INT8_TARGETS = ("cpu", "tensorrt")
CALIB_METHODS = ("minmax", "entropy", "percentile")
#: reduce_range default per flavour: None = auto (on where this CPU's int8 kernels saturate; see the docstring)
DEFAULT_REDUCE_RANGE = {"cpu": None, "tensorrt": False}


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
    reduce_range: bool = False  # 7-bit weights (for x86 CPUs without VNNI)
    quantize_bias: bool = True  # False: float biases (TensorRT: no INT32 DequantizeLinear)
    float_nodes: Tuple[str, ...] = ()  # nodes left unquantized (the classifier head by default)


def int8_recipe(target: str, reduce_range: Optional[bool] = None) -> Int8Recipe:
    """The recipe of ``target`` (``cpu``: asymmetric uint8 activations; ``tensorrt``: symmetric int8 everywhere and
    float biases). ``reduce_range`` None = :data:`DEFAULT_REDUCE_RANGE` (auto for ``cpu``)."""
    if target not in INT8_TARGETS:
        raise PandError(f"unknown INT8 target '{target}'. Valid: {', '.join(INT8_TARGETS)}")
    rr = DEFAULT_REDUCE_RANGE[target] if reduce_range is None else bool(reduce_range)
    if rr is None:
        rr = int8_kernels_saturate()
    if target == "cpu":
        return Int8Recipe("cpu", "QUInt8", "QInt8", activation_symmetric=False, weight_symmetric=True,
                          reduce_range=rr)
    return Int8Recipe("tensorrt", "QInt8", "QInt8", activation_symmetric=True, weight_symmetric=True,
                      reduce_range=rr, quantize_bias=False)


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


class Int8Quantizer:
    """Pre-process and calibrate an fp32 ONNX classifier once, then write QDQ models with chosen float nodes.

    Args:
        src: fp32 ONNX file.
        batches: calibration inputs, float32 ``[B, 3, S, S]`` (training images through the eval transform); kept in
            memory (they also serve the sensitivity measurement).
        target: ``cpu`` or ``tensorrt`` (see the module docstring).
        method: calibration ``minmax`` | ``entropy`` | ``percentile``.
        input_name: the model's input name.
        reduce_range: 7-bit weights; None = the flavour's default.

    Use as a context manager (it owns a temporary directory).
    """

    def __init__(self, src: Union[str, Path], batches: Iterable[np.ndarray], target: str = "cpu",
                 method: str = "minmax", input_name: str = "input", reduce_range: Optional[bool] = None):
        import onnx
        from onnxruntime.quantization import CalibrationMethod, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        if method not in methods:
            raise PandError(f"unknown calibration method '{method}'. Valid: {', '.join(CALIB_METHODS)}")
        self.recipe = int8_recipe(target, reduce_range)
        self.method, self._calib_method = method, methods[method]
        self.input_name = input_name
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        if not self.batches:
            raise PandError("INT8 calibration needs at least one image")
        self._tmp = Path(tempfile.mkdtemp(prefix="pand-quant-"))
        self.preprocessed = self._tmp / "preprocessed.onnx"
        self._cache: Optional[Path] = None
        try:
            quant_pre_process(str(src), str(self.preprocessed))  # symbolic shapes + ORT optimisation + ONNX shapes
            self.model = onnx.load(str(self.preprocessed))
            self.head_nodes = classifier_head_nodes(self.model)
            if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
                self._cache = self._tmp / "calibration.json"  # calibrate once, reuse the ranges (onnxruntime >= 1.23)
                if method == "entropy":
                    self._calibrate_entropy()
        except BaseException:
            self.close()
            raise

    def _calibrate_entropy(self) -> None:
        """Entropy (KL) ranges with a 2048-bin histogram searched over 128 quantized bins (TensorRT's setting),
        written to the calibration cache. ``quantize_static`` cannot pass the bin counts and its entropy default of
        128 bins over 128 quantized bins leaves one candidate threshold, the min/max: measured identical to minmax."""
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        cal = create_calibrator(self.preprocessed, list(set(QDQRegistry) | set(QLinearOpsRegistry)),
                                augmented_model_path=str(self._tmp / "augmented.onnx"),
                                calibrate_method=self._calib_method,
                                extra_options={"num_bins": 2048, "num_quantized_bins": 128,
                                               "symmetric": self.recipe.activation_symmetric})
        cal.collect_data(_Reader(self.input_name, iter(self.batches)).reader)
        save_tensors_data(cal.compute_data(), self._cache)
        del cal

    @property
    def n_images(self) -> int:
        return int(sum(len(b) for b in self.batches))

    def quantize(self, dst: Union[str, Path], float_nodes: Sequence[str] = (),
                 only_nodes: Optional[Sequence[str]] = None) -> Int8Recipe:
        """Write the QDQ model to ``dst`` with ``float_nodes`` left in float (or only ``only_nodes`` quantized)."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        r = self.recipe
        kw = {}
        if self._cache is not None:
            kw["calibration_cache_path"] = str(self._cache)
        reader = None if self._cache is not None and self._cache.is_file() else \
            _Reader(self.input_name, iter(self.batches)).reader
        quantize_static(
            str(self.preprocessed), str(dst), reader,
            quant_format=QuantFormat.QDQ,
            per_channel=r.per_channel,
            reduce_range=r.reduce_range,
            activation_type=getattr(QuantType, r.activation_type),
            weight_type=getattr(QuantType, r.weight_type),
            calibrate_method=self._calib_method,
            nodes_to_quantize=list(only_nodes) if only_nodes is not None else None,
            nodes_to_exclude=list(float_nodes),
            extra_options={"ActivationSymmetric": r.activation_symmetric, "WeightSymmetric": r.weight_symmetric,
                           "QuantizeBias": r.quantize_bias},
            **kw,
        )
        return dataclasses.replace(r, float_nodes=tuple(float_nodes))

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "Int8Quantizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def quantize_int8(src: Union[str, Path], dst: Union[str, Path], batches: Iterable[np.ndarray], target: str = "cpu",
                  method: str = "minmax", input_name: str = "input", quantize_head: bool = False,
                  reduce_range: Optional[bool] = None, float_nodes: Sequence[str] = ()) -> Int8Recipe:
    """Quantize an fp32 ONNX classifier to a QDQ int8 model (one pass, no accuracy search).

    Args:
        src: fp32 ONNX file.
        dst: output QDQ ONNX file.
        batches: calibration inputs, float32 ``[B, 3, S, S]`` (training images through the eval transform).
        target: ``cpu`` or ``tensorrt`` (see the module docstring).
        method: calibration ``minmax`` | ``entropy`` | ``percentile``.
        input_name: the model's input name.
        quantize_head: also quantize the final classifier layer (default: keep it in float).
        reduce_range: 7-bit weights (None = the flavour's default, :data:`DEFAULT_REDUCE_RANGE`: auto for cpu).
        float_nodes: more nodes to keep in float.

    Returns:
        The :class:`Int8Recipe` used (``float_nodes`` lists the nodes left in float).
    """
    with Int8Quantizer(src, batches, target=target, method=method, input_name=input_name,
                       reduce_range=reduce_range) as q:
        keep = ([] if quantize_head else list(q.head_nodes)) + [n for n in float_nodes if n not in q.head_nodes]
        return q.quantize(dst, keep)
