"""The one parity routine: run a backend on the parity inputs and judge its logits against PyTorch's.

``pand-export`` (``pand_export.exporter``: ONNX Runtime and TensorRT parity while exporting), ``pand-engine``
(:func:`pand_runtime.engine.engine_parity`, on the bundle's stored reference) and the accuracy-aware INT8 search
(``pand_export.int8_search``) all call :func:`backend_parity`; the comparison is :func:`.metrics.compare_logits`, the
judgement :func:`.metrics.check_parity`.

Example:
    >>> res, record = backend_parity(OrtBackend("model.onnx"), x, ref_logits, labels, TOLERANCES["fp32"], 32)
    >>> record["passed"], record["top1_agreement"]
    (True, 1.0)
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from .backends.base import Backend, run_batched
from .metrics import ParityResult, Tolerance, check_parity, compare_logits

__all__ = ["backend_parity"]


def backend_parity(backend: Backend, inputs: np.ndarray, ref_logits: np.ndarray, labels: Optional[np.ndarray],
                   tolerance: Tolerance, max_batch: int, num_classes: Optional[int] = None
                   ) -> Tuple[ParityResult, Dict[str, Any]]:
    """Run ``backend`` on ``inputs`` and compare with ``ref_logits``.

    Args:
        backend: the model under test.
        inputs: float32 ``[N, 3, S, S]``, preprocessed as the reference saw them.
        ref_logits: PyTorch's float32 ``[N, C]`` on the same inputs.
        labels: int ``[N]``, or None when the inputs have no labels (agreement only, no accuracy).
        tolerance: what passes (``tie_margin`` excuses near-ties).
        max_batch: the most images per backend call (:func:`.backends.base.run_batched`).
        num_classes: C of the (empty) output when ``inputs`` is empty (default: ``ref_logits.shape[1]``).

    Returns:
        ``(result, record)``: the :class:`.metrics.ParityResult` and the manifest's parity record
        ``{**result, "tolerance", "passed", "failures"}``.
    """
    if len(inputs):
        out = run_batched(backend, inputs, max_batch)
    else:
        out = np.zeros((0, ref_logits.shape[1] if num_classes is None else num_classes), np.float32)
    res = compare_logits(ref_logits, out, labels, tie_margin=tolerance.tie_margin)
    fails = check_parity(res, tolerance)
    return res, {**res.to_dict(), "tolerance": tolerance.to_dict(), "passed": not fails, "failures": fails}
