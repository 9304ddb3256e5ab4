"""What every inference backend implements (:class:`Backend`), and the one way to run a batch of any size on one
(:func:`run_batched`).

A backend runs a classifier on a preprocessed float32 NCHW batch and returns its logits. Implementations:
:class:`~pand_runtime.backends.ort_backend.OrtBackend` (ONNX Runtime) and
:class:`~pand_runtime.backends.trt_backend.TrtBackend` (TensorRT). Neither imports its engine library until it is
constructed.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Protocol, runtime_checkable

import numpy as np

from ..errors import PandError

__all__ = ["Backend", "run_batched"]


@runtime_checkable
class Backend(Protocol):
    """An inference backend.

    Attributes:
        name: ``onnxruntime`` | ``tensorrt`` (what ``pand-bench`` rows and ``Predictor.backend_name`` show).
        input_name, output_name: the model's input and output tensor names.
    """

    name: str
    input_name: str
    output_name: str

    @property
    def fixed_batch(self) -> Optional[int]:
        """The only batch size the model accepts, or None when its batch axis is dynamic."""

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits ``[N, C]`` of a contiguous float32 ``[N, 3, S, S]`` batch (``N`` = :attr:`fixed_batch` when set,
        else at most the model's largest batch)."""

    def describe(self) -> Dict[str, Any]:
        """What runs the model (backend, providers or GPU, versions), for benchmark rows."""

    def close(self) -> None:
        """Free the session or engine; the backend cannot run afterwards."""


def run_batched(backend: Backend, x: np.ndarray, max_batch: int) -> np.ndarray:
    """Logits ``[N, C]`` of a float32 batch ``x [N, 3, S, S]`` of any size ``N >= 1`` on ``backend``.

    ``x`` is cut into consecutive chunks of ``B = backend.fixed_batch or max(1, max_batch)`` rows; with a fixed batch
    the last chunk (``n < B`` rows) is zero-padded to ``B`` and its ``B - n`` padded rows are dropped from the output.
    The chunks' logits are concatenated in order, so row ``i`` of the result is the logits of ``x[i]``.

    Raises:
        PandError: ``x`` is empty.
    """
    if len(x) == 0:
        raise PandError("run_batched got an empty batch; pass at least one image")
    fixed = backend.fixed_batch
    step = fixed or max(1, int(max_batch))
    outs = []
    for i in range(0, len(x), step):
        chunk = x[i:i + step]
        n = len(chunk)
        if fixed is not None and n < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
        outs.append(np.asarray(backend.run(np.ascontiguousarray(chunk)))[:n])
    return np.concatenate(outs)
