"""TensorRT backend (TensorRT 10.x and 11.x Python API, pycuda buffers).

Name-based I/O only (bindings are gone since TRT 10; docs/deployment.md): the engine's I/O tensors are enumerated with
``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode``; each call sets the input shape with
``set_input_shape``, binds device pointers with ``set_tensor_address`` and runs ``execute_async_v3`` on one CUDA
stream. Host buffers are page-locked (``pagelocked_empty``) and sized for the profile's max batch; copies are async
on the same stream, synchronised once per call. One execution context, stream and buffer set serve every call, so
:meth:`TrtBackend.run` holds a lock: concurrent calls from several threads are serialised, never interleaved. Each
call also records CUDA events around ``execute_async_v3``: :attr:`TrtBackend.last_gpu_ms` is the GPU compute time of
the last call (the host time of ``run`` additionally includes the copies and the synchronisation).
:meth:`TrtBackend.close` frees the device and page-locked buffers, the context and engine, and releases the retained
primary CUDA context exactly once, from whichever thread calls it (:mod:`.cuda_context`: pycuda's ``detach()`` does
nothing off the thread that retained the context, so the retain and the release run on a private thread). Any
exception of the TensorRT/pycuda stack while loading (pycuda ``LogicError``/``MemoryError``, a ``TypeError`` from
``nptype`` for bf16 I/O) becomes a :class:`~pand_runtime.errors.PandError` naming the engine file; the return
values of ``set_input_shape`` are checked.

Plans are tied to the TensorRT version and the GPU's compute capability (docs/deployment.md), so the backend refuses an
engine whose recorded ``trt_version`` or ``compute_capability`` differs from this device's, naming both.

Not run on real TensorRT in development (no CUDA GPU there); tests/runtime/test_trt_contract.py runs this code on
faithful fakes of ``tensorrt`` and ``pycuda.driver`` (tests/fakes/: stream handles are ints, copies complete at
``synchronize``, push/pop balance per thread, shapes inside the profile), ``bench/mutate_trt.py`` checks that those
tests catch single-line mistakes here, and tests/export/test_export_trt.py runs real engines wherever TensorRT, pycuda
and a CUDA GPU exist (skipped otherwise).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from ..errors import ArtifactError, PandError

from .._lazy import require_trt
from ..device import gpu_power_mode
from .cuda_context import RetainedContext

__all__ = ["TrtBackend", "device_info", "check_engine_compat"]


def device_info(device: int = 0) -> Dict[str, str]:
    """``{"gpu_name", "compute_capability", "trt_version"}`` of CUDA device ``device`` (imports TRT + pycuda)."""
    trt, cuda = require_trt()
    cuda.init()
    if cuda.Device.count() <= device:
        raise PandError(f"no CUDA device {device}: pycuda sees {cuda.Device.count()} device(s)")
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    info = {"gpu_name": dev.name(), "compute_capability": f"{major}.{minor}", "trt_version": trt.__version__}
    mode = gpu_power_mode()
    if mode:
        info["power_mode"] = mode
    return info


def check_engine_compat(expected: Dict[str, Any], actual: Dict[str, str], engine_path: Union[str, Path] = "engine"
                        ) -> None:
    """Refuse a plan built with another TensorRT version or for another compute capability (pure; no TRT needed).

    Args:
        expected: the manifest's build info (``trt_version``, ``compute_capability``, ``gpu_name``).
        actual: this device's :func:`device_info`.

    Raises:
        ArtifactError: naming both versions / both compute capabilities and how to rebuild.
    """
    want_v, want_cc = expected.get("trt_version"), expected.get("compute_capability")
    if want_v and str(want_v) != str(actual.get("trt_version")):
        raise ArtifactError(
            f"engine {engine_path} was built with TensorRT {want_v}, this device runs TensorRT "
            f"{actual.get('trt_version')}. Plans only load on the TensorRT version that built them: rebuild it here "
            f"with pand-engine BUNDLE (or use the bundle's model.onnx with backend='onnxruntime')")
    if want_cc and str(want_cc) != str(actual.get("compute_capability")):
        raise ArtifactError(
            f"engine {engine_path} was built for compute capability {want_cc} ({expected.get('gpu_name', '?')}), "
            f"this GPU is {actual.get('gpu_name')} with compute capability {actual.get('compute_capability')}. "
            f"Rebuild the engine on this device with pand-engine BUNDLE")


class TrtBackend:
    """Runs a serialized TensorRT engine.

    Args:
        engine_path: the plan file (``model.engine``).
        expected: the manifest's TensorRT info (``trt_version``, ``compute_capability``, ``gpu_name``); a version or
            compute-capability mismatch is refused before deserialising.
        device: CUDA device ordinal.
    """

    name = "tensorrt"

    def __init__(self, engine_path: Union[str, Path], expected: Optional[Dict[str, Any]] = None, device: int = 0):
        self._lock = threading.Lock()
        self._closed = True  # until the engine is loaded
        self.last_gpu_ms: Optional[float] = None
        self._host: Dict[str, Any] = {}
        self._dev: Dict[str, Any] = {}
        self.context = self.engine = self.stream = None
        self._ctx: Optional[RetainedContext] = None
        try:
            self._load(Path(engine_path), expected or {}, device)
        except PandError:
            raise
        except Exception as e:  # noqa: BLE001 - pycuda LogicError/MemoryError, TypeError (bf16 I/O), ...
            raise PandError(f"cannot load the TensorRT engine {engine_path} ({type(e).__name__}: {e}); rebuild it "
                            f"on this device with pand-engine BUNDLE, or run the bundle's model.onnx with "
                            f"backend='onnxruntime'") from e
        self._closed = False

    def _load(self, engine_path: Path, expected: Dict[str, Any], device: int) -> None:
        trt, cuda = require_trt()
        self._trt, self._cuda = trt, cuda
        info = device_info(device)
        check_engine_compat(expected, info, engine_path)
        self.info = info
        self._ctx = RetainedContext(cuda, device)
        loaded = False
        self._ctx.push()
        try:
            self._setup(engine_path)
            loaded = True
        finally:
            if not loaded:
                self._release()
            self._ctx.pop()
            if not loaded:
                self._ctx.release()

    def _setup(self, engine_path: Path) -> None:
        trt, cuda = self._trt, self._cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {engine_path}; rebuild it on this device with "
                                f"pand-engine BUNDLE")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ArtifactError(f"TensorRT could not create an execution context for {engine_path} (out of device "
                                f"memory? see the TensorRT log above)")
        self.stream = cuda.Stream()
        self._start, self._end = cuda.Event(), cuda.Event()
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            (self.inputs if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.outputs).append(name)
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise ArtifactError(f"expected a classifier engine with 1 input and 1 output, got {self.inputs} -> "
                                f"{self.outputs}")
        self.input_name, self.output_name = self.inputs[0], self.outputs[0]
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if shape[0] == -1:
            mn, _, mx = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(mn[0]), int(mx[0])
        else:
            self.min_batch = self.max_batch = int(shape[0])
        self.sample_shape = tuple(int(d) for d in shape[1:])
        self._set_shape((self.max_batch, *self.sample_shape))
        self.out_sample_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))[1:]
        self._host, self._dev = {}, {}
        for name, sample in ((self.input_name, self.sample_shape), (self.output_name, self.out_sample_shape)):
            trt_type = self.engine.get_tensor_dtype(name)
            try:
                dtype = np.dtype(trt.nptype(trt_type))
            except TypeError:
                raise ArtifactError(f"engine {engine_path}: tensor {name!r} has TensorRT type "
                                    f"{getattr(trt_type, 'name', trt_type)}, which numpy cannot hold; export the "
                                    f"model with float32 or float16 inputs and outputs") from None
            host = cuda.pagelocked_empty(int(self.max_batch * np.prod(sample)), dtype)
            self._host[name] = host
            self._dev[name] = cuda.mem_alloc(host.nbytes)
            self.context.set_tensor_address(name, int(self._dev[name]))

    def _set_shape(self, shape: tuple) -> None:
        """``set_input_shape`` or :class:`PandError` naming the shape and the engine's profile."""
        if not self.context.set_input_shape(self.input_name, shape):
            raise PandError(f"TensorRT refused the input shape {shape} for {self.input_name!r}: the engine's profile "
                            f"takes batch {self.min_batch}..{self.max_batch} of {self.sample_shape}")

    @property
    def fixed_batch(self) -> Optional[int]:
        return self.max_batch if self.min_batch == self.max_batch else None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits ``[N, C]`` for a float32 NCHW batch with ``min_batch <= N <= max_batch``."""
        cuda = self._cuda
        n = int(x.shape[0])
        if tuple(x.shape[1:]) != self.sample_shape or not self.min_batch <= n <= self.max_batch:
            raise PandError(f"TensorRT engine takes ({self.min_batch}..{self.max_batch}, "
                            f"{', '.join(map(str, self.sample_shape))}); got {tuple(x.shape)}")
        with self._lock:  # one context/stream/buffer set: calls from several threads run one at a time
            if self._closed:
                raise PandError("this TensorRT backend was closed; load the bundle again")
            h_in, h_out = self._host[self.input_name], self._host[self.output_name]
            n_in, n_out = x.size, n * int(np.prod(self.out_sample_shape))
            self._ctx.push()
            try:
                self._set_shape(tuple(x.shape))
                h_in[:n_in] = x.reshape(-1).astype(h_in.dtype, copy=False)
                cuda.memcpy_htod_async(self._dev[self.input_name], h_in[:n_in], self.stream)
                self._start.record(self.stream)
                if not self.context.execute_async_v3(self.stream.handle):
                    raise PandError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
                self._end.record(self.stream)
                cuda.memcpy_dtoh_async(h_out[:n_out], self._dev[self.output_name], self.stream)
                self.stream.synchronize()
                self.last_gpu_ms = float(self._end.time_since(self._start))
                return h_out[:n_out].reshape(n, *self.out_sample_shape).astype(np.float32, copy=True)
            finally:
                self._ctx.pop()

    def describe(self) -> Dict[str, object]:
        return {"backend": self.name, **self.info, "batch_range": [self.min_batch, self.max_batch]}

    def _release(self) -> None:
        """Free what exists (called with the CUDA context current), in dependency order: buffers, context, engine."""
        for dev in self._dev.values():
            try:
                dev.free()
            except Exception:  # noqa: BLE001 - already freed or the context is gone: nothing left to free
                pass
        for host in self._host.values():
            base = getattr(host, "base", None)
            if base is not None and hasattr(base, "free"):
                try:
                    base.free()
                except Exception:  # noqa: BLE001
                    pass
        self._dev, self._host = {}, {}
        self.context = None
        self.engine = None
        self.stream = None
        self._start = self._end = None

    def close(self) -> None:
        """Free the device and page-locked buffers, the execution context and engine, and release the retained CUDA
        context exactly once. Safe from any thread and safe to call twice; :meth:`run` afterwards raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ctx.push()
            try:
                self._release()
            finally:
                self._ctx.pop()
                self._ctx.release()
