"""What this machine has for TensorRT, and what is missing with the fix: the one probe behind
``Predictor(backend="auto")``'s choice and ``pand-engine --check``.

:func:`probe` imports ``tensorrt`` and ``pycuda.driver`` (through :mod:`pand_runtime._lazy`), initialises CUDA and
counts the GPUs, catching *every* exception on the way (a broken ``libnvinfer``, a numpy ABI mismatch and a missing
driver raise ``OSError``/``ImportError``/pycuda's ``RuntimeError``, not only ``ImportError``). Each problem is one
:class:`Missing` with the cause and the fix. Nothing is installed or built.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import _lazy
from .errors import PandError
from .trt_version import check_trt_version

__all__ = ["Missing", "TrtEnv", "probe", "PYCUDA_HINT", "GPU_HINT"]

#: How to build pycuda (x86 and Jetson), named when it cannot be imported.
PYCUDA_HINT = ("pip install 'pycuda>=2025.1.2' in the same environment (it compiles: needs python3-dev, a C++ compiler "
               "and CUDA's nvcc on PATH; on a Jetson: sudo apt install python3-dev build-essential and export "
               "PATH=/usr/local/cuda/bin:$PATH). See README 'Deploying to a device'")
#: What to check when CUDA sees no GPU.
GPU_HINT = ("run on the machine with the NVIDIA GPU; check that its driver works (nvidia-smi; on a Jetson: JetPack "
            "installed and the user in the 'video' group) and that CUDA_VISIBLE_DEVICES does not hide it")


@dataclass
class Missing:
    """One thing TensorRT inference needs that this machine lacks: ``what`` (the cause) and ``fix``."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}. Fix: {self.fix}"


@dataclass
class TrtEnv:
    """The probe's result: versions found (None = absent), the GPUs, and what is missing."""

    numpy: str = ""
    numpy_path: str = ""
    tensorrt: Optional[str] = None
    pycuda: Optional[str] = None
    cuda_driver: Optional[str] = None
    gpus: List[Dict[str, str]] = field(default_factory=list)
    missing: List[Missing] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def lines(self) -> List[str]:
        """The report ``pand-engine --check`` prints."""
        out = [f"numpy      {self.numpy} ({self.numpy_path})",
               f"TensorRT   {self.tensorrt or 'MISSING'}",
               f"pycuda     {self.pycuda or 'MISSING'}",
               f"CUDA       driver {self.cuda_driver or 'MISSING'}"]
        out += [f"GPU {g['index']}      {g['name']} (compute capability {g['compute_capability']})" for g in self.gpus]
        if not self.gpus:
            out.append("GPU        MISSING")
        out += [f"missing: {m}" for m in self.missing]
        out.append("ready for TensorRT engines" if self.ok else "NOT ready for TensorRT engines")
        return out


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _driver_version(cuda: Any) -> Optional[str]:
    try:
        v = int(cuda.get_driver_version())
        return f"{v // 1000}.{v % 1000 // 10}"
    except Exception:  # noqa: BLE001 - informational only
        return None


def probe(device: int = 0) -> TrtEnv:
    """Import TensorRT and pycuda, initialise CUDA and look for GPU ``device``; every failure becomes a
    :class:`Missing` (never raises)."""
    import numpy as np

    env = TrtEnv(numpy=np.__version__, numpy_path=str(getattr(np, "__file__", "?")))
    try:
        trt = _lazy.tensorrt.require()
        env.tensorrt = str(getattr(trt, "__version__", "?"))
        check_trt_version(env.tensorrt)
    except PandError as e:
        if env.tensorrt is None:  # the lazy import failed: name the ImportError behind it
            env.missing.append(Missing(f"TensorRT is not installed or cannot be imported ({_err(e.__cause__ or e)})",
                                       _lazy.TRT_INSTALL_HINT))
        else:
            env.missing.append(Missing(f"TensorRT {env.tensorrt} is too old (pand needs >= 10)",
                                       "x86: pip install 'tensorrt>=10'; Jetson: JetPack 6 or newer"))
    except Exception as e:  # noqa: BLE001 - a broken install (missing libnvinfer, numpy ABI) is "missing" too
        env.missing.append(Missing(f"TensorRT cannot be imported ({_err(e)})", _lazy.TRT_INSTALL_HINT +
                                   "; on a Jetson keep the system numpy that python3-libnvinfer was built against"))
    try:
        cuda = _lazy.pycuda_driver.require()
    except Exception as e:  # noqa: BLE001
        cause = e.__cause__ if isinstance(e, PandError) and e.__cause__ is not None else e
        env.missing.append(Missing(f"pycuda is not installed or cannot be imported ({_err(cause)})", PYCUDA_HINT))
        return env
    try:
        import pycuda

        env.pycuda = str(getattr(pycuda, "VERSION_TEXT", None) or getattr(pycuda, "__version__", "?"))
    except Exception:  # noqa: BLE001
        env.pycuda = "?"
    try:
        cuda.init()
        env.cuda_driver = _driver_version(cuda)
        count = int(cuda.Device.count())
        for i in range(count):
            dev = cuda.Device(i)
            major, minor = dev.compute_capability()
            env.gpus.append({"index": str(i), "name": str(dev.name()), "compute_capability": f"{major}.{minor}"})
    except Exception as e:  # noqa: BLE001 - no driver, no device
        env.missing.append(Missing(f"CUDA sees no GPU ({_err(e)})", GPU_HINT))
        return env
    if not env.gpus:
        env.missing.append(Missing("CUDA sees no GPU (0 devices)", GPU_HINT))
    elif device >= len(env.gpus):
        env.missing.append(Missing(f"there is no CUDA device {device} (this machine has {len(env.gpus)})",
                                   "pass --device / device= with an existing GPU index"))
    return env
