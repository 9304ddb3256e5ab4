"""Pure ONNX converters: torch -> ONNX (real dynamic batch axis), checker, onnxslim, FP16, metadata, I/O specs.

Dynamic batch (docs/deployment.md): a dynamic axis traced with an example batch of 1 is specialised to 1 by the
exporter, so the example batch is always >= 2 when the batch is dynamic, and :func:`torch_to_onnx` then checks that
the saved input's first dimension really is symbolic. The default exporter is the TorchScript one
(``dynamo=False``, what Ultralytics pins; it reads ``dynamic_axes`` natively); ``exporter="dynamo"`` uses
``torch.export`` with ``dynamic_shapes`` instead.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, List, Mapping, Union

from pand.errors import PandError
from pand_runtime.manifest import TensorSpec

__all__ = [
    "INPUT_NAME", "OUTPUT_NAME", "EXPORTERS", "torch_to_onnx", "check_onnx", "simplify_onnx", "convert_fp16",
    "onnx_io_specs", "set_onnx_metadata", "onnx_opset",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTERS = ("torchscript", "dynamo")


def torch_to_onnx(model: Any, path: Union[str, Path], image_size: int, batch: int = 1, dynamic: bool = True,
                  opset: int = 18, exporter: str = "torchscript", max_batch: int = 64) -> None:
    """Export ``model`` (eval mode, float32 NCHW input -> logits) to a single-file ONNX model.

    Args:
        model: the torch module (its ``forward`` is what gets exported).
        path: output ``.onnx`` file.
        image_size: square input size ``S`` of ``[B, 3, S, S]``.
        batch: the fixed batch size (static), or the example batch when dynamic (raised to >= 2).
        dynamic: make axis 0 of input and output a symbolic ``batch`` dimension.
        opset: ONNX opset (<= 18 recommended: ORT CUDA and ORT static quantization lag behind newer opsets).
        exporter: ``torchscript`` (``dynamo=False``) or ``dynamo`` (``torch.export`` + ``dynamic_shapes``).
        max_batch: upper bound given to ``torch.export.Dim`` with the dynamo exporter.

    Raises:
        PandError: the exported model's batch axis is not dynamic although ``dynamic`` was asked.
    """
    import torch

    if exporter not in EXPORTERS:
        raise PandError(f"unknown exporter '{exporter}'. Valid: {', '.join(EXPORTERS)}")
    example_batch = max(2, batch) if dynamic else batch  # 0/1 specialisation trap (pytorch/pytorch#148629)
    x = torch.randn(example_batch, 3, image_size, image_size)
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
        if exporter == "torchscript":
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
        else:
            shapes = ({0: torch.export.Dim("batch", min=1, max=max(max_batch, example_batch))},) if dynamic else None
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=shapes, external_data=False,
                                        verbose=False)
            program.save(str(path), external_data=False)
    if dynamic:
        dim0 = onnx_io_specs(path)[0][0].shape[0]
        if not isinstance(dim0, str):
            raise PandError(f"the exported model's batch axis was specialised to {dim0} instead of staying dynamic "
                            f"(exporter={exporter}); try --exporter torchscript or --static-batch")


def check_onnx(path: Union[str, Path]) -> None:
    """``onnx.checker.check_model(path, full_check=True)`` (also runs strict shape inference); path-based, so
    models over 2 GiB work too."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # onnx.checker.ValidationError, InferenceError
        raise PandError(f"the exported ONNX model {path} fails onnx.checker: {e}") from e


def simplify_onnx(path: Union[str, Path]) -> bool:
    """Simplify in place with onnxslim (constant folding, dead-node removal, fusions). Returns False (and keeps
    the original) if onnxslim fails: like NVIDIA's quick-start guide, simplification is allowed to fail."""
    import onnx
    import onnxslim

    try:
        slim = onnxslim.slim(onnx.load(str(path)))
    except Exception as e:  # noqa: BLE001 - any onnxslim failure means "keep the unsimplified model"
        warnings.warn(f"onnxslim failed ({type(e).__name__}: {e}); keeping the unsimplified model")
        return False
    onnx.save(slim, str(path))
    return True


def convert_fp16(src: Union[str, Path], dst: Union[str, Path]) -> None:
    """FP16 weights and compute with FP32 inputs/outputs (``keep_io_types=True``), via onnxconverter-common.

    Values outside the fp16 range are clamped by the converter (``max_finite_val=1e4``); the parity check that
    follows is what decides whether the result is acceptable.
    """
    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def _dims(value_info: Any) -> List[Union[int, str]]:
    dims: List[Union[int, str]] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def onnx_io_specs(path: Union[str, Path]) -> tuple[List[TensorSpec], List[TensorSpec]]:
    """Input and output :class:`TensorSpec` (name, shape with symbolic dims as strings, numpy dtype name)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(v: Any) -> TensorSpec:
        dtype = helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
        return TensorSpec(name=v.name, shape=_dims(v), dtype=dtype)

    return ([spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output])


def onnx_opset(path: Union[str, Path]) -> int:
    """The default-domain opset of a model."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0))


def set_onnx_metadata(path: Union[str, Path], props: Mapping[str, str]) -> None:
    """Write ``props`` into the model's ``metadata_props`` (replacing keys of the same name)."""
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(k), str(v)
    model.producer_name = "pand-export"
    onnx.save(model, str(path))
