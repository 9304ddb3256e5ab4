"""Lazy imports of the optional heavy dependencies (Polygraphy's ``mod.lazy_import``, open_clip's ``require_*``).

Nothing here imports the module it names until an attribute is used, so ``import pand_runtime`` stays cheap and never
pulls in TensorRT, pycuda or ONNX Runtime (and never torch: the runtime has no torch dependency at all). A missing
package fails with a :class:`pand_runtime.errors.PandError` that names what to install; nothing is auto-installed.

Example:
    >>> from pand_runtime._lazy import onnxruntime
    >>> onnxruntime.is_available()
    True
    >>> sess = onnxruntime.InferenceSession("model.onnx")  # imported here, on first use
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Optional

from .errors import PandError
from .trt_version import check_trt_version

__all__ = [
    "LazyModule", "lazy_import", "pip_install", "onnxruntime", "tensorrt", "pycuda_driver", "trt_available", "require_trt",
    "require_tensorrt", "TRT_INSTALL_HINT",
]


class LazyModule:
    """A module proxy that imports ``name`` on first attribute access.

    Args:
        name: dotted module name, e.g. ``"onnxruntime"`` or ``"pycuda.driver"``.
        extra: the ``pand-runtime`` pip extra that installs it (``""``: a base dependency), named in the error.
        purpose: what the module is needed for (named in the error message).
    """

    def __init__(self, name: str, extra: str, purpose: str, hint: Optional[str] = None):
        self._name = name
        self._extra = extra
        self._purpose = purpose
        self._hint = hint  # replaces the generic "pip install 'pand-runtime[extra]'" advice
        self._module: Optional[ModuleType] = None

    def is_available(self) -> bool:
        """Whether the module can be found, without importing it."""
        if self._module is not None:
            return True
        try:
            return importlib.util.find_spec(self._name) is not None
        except (ImportError, ValueError):  # a parent package is missing or was blocked
            return False

    def require(self) -> ModuleType:
        """Import and return the real module, or raise :class:`PandError` saying how to install it."""
        if self._module is None:
            try:
                self._module = importlib.import_module(self._name)
            except ImportError as e:
                advice = self._hint or f"Install it with: {pip_install(self._extra)}"
                raise PandError(
                    f"{self._purpose} needs the Python package '{self._name}', which cannot be imported ({e}). "
                    f"{advice}"
                ) from e
        return self._module

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.require(), attr)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported"
        return f"<LazyModule {self._name!r} ({state})>"


def pip_install(extra: str = "") -> str:
    """The pip command that installs pand-runtime with ``extra`` (``""``: the base install), from PyPI-style name or
    from a pand checkout."""
    suffix = f"[{extra}]" if extra else ""
    return f"pip install 'pand-runtime{suffix}' (from a pand checkout: pip install './runtime{suffix}')"


def lazy_import(name: str, extra: str, purpose: Optional[str] = None, hint: Optional[str] = None) -> LazyModule:
    """A :class:`LazyModule` for ``name``; ``extra`` is the pand-runtime pip extra that provides it."""
    return LazyModule(name, extra, purpose or f"this feature ({name})", hint)


#: How to get TensorRT + pycuda, named by every "cannot import" error (README: "Deploying to a device").
TRT_INSTALL_HINT = (
    "Install it: x86 with an NVIDIA GPU: " + pip_install("trt") + " (the tensorrt wheel, TensorRT >= 10, and pycuda); "
    "Jetson: TensorRT comes with JetPack as an apt package for the system Python (sudo apt install "
    "python3-libnvinfer), so create the venv with python3 -m venv --system-site-packages and pip install "
    "'pycuda>=2025.1.2' in it (it builds against JetPack's CUDA: sudo apt install python3-dev build-essential; keep "
    "numpy<2 with -c runtime/jetson-constraints.txt). See README 'Deploying to a device'")

onnxruntime = lazy_import("onnxruntime", "", "the ONNX Runtime backend")
tensorrt = lazy_import("tensorrt", "trt", "TensorRT (engines: pand-engine, the TensorRT backend)", TRT_INSTALL_HINT)
pycuda_driver = lazy_import("pycuda.driver", "trt", "TensorRT's CUDA buffers (pycuda)", TRT_INSTALL_HINT)


def trt_available() -> bool:
    """True when both TensorRT and pycuda can be imported (nothing is imported to find out)."""
    return tensorrt.is_available() and pycuda_driver.is_available()


def require_tensorrt() -> ModuleType:
    """Import ``tensorrt`` and check it is >= 10, or raise :class:`PandError` saying what to install."""
    trt = tensorrt.require()
    check_trt_version(getattr(trt, "__version__", "0"))
    return trt


def require_trt() -> tuple[ModuleType, ModuleType]:
    """Import ``(tensorrt >= 10, pycuda.driver)`` or raise :class:`PandError` saying what to install."""
    return require_tensorrt(), pycuda_driver.require()
