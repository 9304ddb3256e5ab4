"""The model files a bundle can hold and the runtime backend that runs each: the one backend -> format table.

The predictor (which model file a backend loads), ``pand-bench`` (which file's sha256 identifies a row) and the
exporter's format table (``pand_export.exporter.ExportFormat.backend``: a format's file and manifest format are
those of the backend it names) all read :data:`MODEL_KINDS`; nothing else maps a backend to a file.

Example:
    >>> kind_of_backend("onnxruntime")
    ModelKind(backend='onnxruntime', format='onnx', file='model.onnx')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from .errors import PandError
from .manifest import ENGINE_NAME, ONNX_NAME

__all__ = ["ModelKind", "MODEL_KINDS", "BACKEND_NAMES", "kind_of_backend"]


@dataclass(frozen=True)
class ModelKind:
    """One kind of model file.

    Attributes:
        backend: the runtime backend that runs it (:attr:`pand_runtime.backends.base.Backend.name`).
        format: the manifest's ``models[].format`` of that file.
        file: its file name inside a bundle.
    """

    backend: str
    format: str
    file: str


MODEL_KINDS: Tuple[ModelKind, ...] = (
    ModelKind(backend="onnxruntime", format="onnx", file=ONNX_NAME),
    ModelKind(backend="tensorrt", format="tensorrt", file=ENGINE_NAME),
)
#: the backends a bundle can be run with, in the order ``auto`` falls back through (ONNX Runtime first)
BACKEND_NAMES: Tuple[str, ...] = tuple(k.backend for k in MODEL_KINDS)


def kind_of_backend(backend: str) -> ModelKind:
    """The :class:`ModelKind` that ``backend`` runs, or :class:`PandError` naming the valid backends."""
    for k in MODEL_KINDS:
        if k.backend == backend:
            return k
    raise PandError(f"unknown backend '{backend}'. Valid: {', '.join(BACKEND_NAMES)}")
