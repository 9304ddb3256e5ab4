"""Inference backends: :mod:`.base` (the :class:`Backend` protocol and :func:`run_batched`), :mod:`.ort_backend`
(ONNX Runtime) and :mod:`.trt_backend` (TensorRT + pycuda).

Neither implementation imports its engine library until a backend is constructed.
"""
from .base import Backend, run_batched
from .ort_backend import OrtBackend
from .trt_backend import TrtBackend

__all__ = ["Backend", "OrtBackend", "TrtBackend", "run_batched"]
