"""The TensorRT version floor: one check shared by the lazy import (:func:`pand_runtime._lazy.require_tensorrt`), the
engine builder (:mod:`.trt_build`) and the environment probe (:mod:`.trt_env`).

TensorRT >= 10 is required: 8.x/9.x lack ``build_serialized_network`` without ``EXPLICIT_BATCH``, name-based I/O and
``execute_async_v3``. This module imports nothing but :mod:`.errors`, so every TensorRT module can depend on it
without an import circle.

Example:
    >>> check_trt_version("10.3.0.26")
    10
"""
from __future__ import annotations

from .errors import PandError

__all__ = ["MIN_TRT_MAJOR", "JETSON_HINT", "trt_major", "check_trt_version"]

MIN_TRT_MAJOR = 10
JETSON_HINT = "see README 'Deploying to a device' (Jetson: JetPack's TensorRT in a --system-site-packages venv)"


def trt_major(version: str) -> int:
    """Major version of a TensorRT version string (``"10.3.0.26"`` -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise PandError(f"cannot read the TensorRT version {version!r}") from None


def check_trt_version(version: str) -> int:
    """The major version, or :class:`PandError` for TensorRT older than :data:`MIN_TRT_MAJOR`."""
    major = trt_major(version)
    if major < MIN_TRT_MAJOR:
        raise PandError(
            f"TensorRT {version} is too old: pand needs TensorRT >= {MIN_TRT_MAJOR} (name-based I/O, "
            f"execute_async_v3, build_serialized_network; 8.x/9.x fail on removed or missing APIs). x86: pip install "
            f"'tensorrt>=10'; Jetson: JetPack 6 or newer ships TensorRT 10 ({JETSON_HINT})")
    return major
