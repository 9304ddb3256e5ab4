"""Inference backends: :mod:`.ort_backend` (ONNX Runtime) and :mod:`.trt_backend` (TensorRT + pycuda).

Both expose ``run(x: float32 NCHW) -> logits [N, C]``, ``fixed_batch`` (None for a dynamic batch axis),
``describe()`` and ``close()``. Neither module imports its engine library until a backend is constructed.
"""
from .ort_backend import OrtBackend
from .trt_backend import TrtBackend

__all__ = ["OrtBackend", "TrtBackend"]
