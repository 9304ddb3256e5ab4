"""pand export: the student classifier of a run -> a deployable bundle (ONNX fp32/fp16/int8, TensorRT engine).

``pand-export RUN_DIR --format onnx|trt|all --precision fp32|fp16|int8`` (:mod:`.cli`). The format table and one
function per format live in :mod:`.exporter`; pure converters in :mod:`.onnx_export` (torch -> ONNX, checker,
onnxslim, fp16), :mod:`.quantize` (ORT static INT8, QDQ), :mod:`.int8_search` (accuracy-aware INT8: the most
sensitive layers kept in float until the parity target is met) and :mod:`.trt` (ONNX -> TensorRT plan). The bundle
is read by the torch-free :mod:`runtime` package.
"""
from .exporter import (
    EXPORT_FORMATS, FORMAT_CHOICES, PRECISIONS, ExportFormat, ExportOptions, ExportResult, default_output_dir,
    export_bundle, get_format,
)

__all__ = [
    "EXPORT_FORMATS", "FORMAT_CHOICES", "PRECISIONS", "ExportFormat", "ExportOptions", "ExportResult",
    "default_output_dir", "export_bundle", "get_format",
]
