"""``pand-export --format trt``: the engine is built by the runtime's torch-free builder (:mod:`pand_runtime.trt_build`,
the same code as ``pand-engine``); this module only checks, before anything is written, that an engine can be built
here.

Not run on real TensorRT in development (no CUDA GPU there): tests/export/test_export_trt.py builds engines wherever
TensorRT, pycuda and a CUDA GPU exist and skips otherwise; tests/runtime/test_trt_contract.py checks the builder
against a stand-in ``tensorrt`` module.
"""
from __future__ import annotations

from typing import Dict

from pand.errors import PandError
from pand_runtime.backends.trt_backend import device_info

__all__ = ["require_trt_build", "trt_environment"]


def require_trt_build(device: int = 0) -> Dict[str, str]:
    """Check that an engine can be built here: TensorRT >= 10 and pycuda importable and a CUDA GPU visible.

    Returns:
        :func:`trt_environment` of ``device``.

    Raises:
        PandError: naming what is missing and how to get it.
    """
    try:
        return trt_environment(device)
    except PandError as e:
        raise PandError(f"--format trt builds the engine on this machine and needs TensorRT + pycuda + a CUDA GPU: "
                        f"{e}. Otherwise export --format onnx, copy the bundle to the target and build the engine "
                        f"there with pand-engine BUNDLE") from None


def trt_environment(device: int = 0) -> Dict[str, str]:
    """``{"trt_version", "gpu_name", "compute_capability"[, "power_mode"]}`` of the build machine."""
    try:
        return device_info(device)
    except PandError:
        raise
    except Exception as e:  # noqa: BLE001 - pycuda's LogicError/RuntimeError when there is no driver or device
        raise PandError(f"no usable CUDA GPU ({type(e).__name__}: {e})") from None
