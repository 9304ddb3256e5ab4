"""A faithful stand-in for the part of ``pycuda.driver`` that pand's TensorRT backend uses, for tests without a GPU.

It keeps the state that CUDA and pycuda check, and fails where they fail, with their exception types and messages:

* **Initialisation.** ``init()`` raises ``RuntimeError`` ("cuInit failed: no CUDA-capable device is detected") when
  there is no device; device queries before ``init()`` raise ``LogicError`` ("... initialization error").
* **Two context stacks per thread**, as in pycuda's ``src/cpp/cuda.hpp``: pycuda's own ``context_stack`` (what
  ``Context.pop()`` pops) and the driver's stack (``cuCtxPushCurrent``/``cuCtxPopCurrent``). ``push()`` first pops the
  driver entry of the context pycuda had current (``prepare_context_switch``), then pushes. ``Context.pop()`` (a
  static method) on an empty pycuda stack raises ``LogicError("context::pop failed: invalid device context - cannot
  pop non-current context")``.
* **Retained primary contexts are reference counted** (``cuDevicePrimaryCtxRetain``/``Release``); the last release
  destroys the context and every allocation in it. ``Context.detach()`` follows pycuda's ``context::detach``: a
  current context is released at once; a non-current one is pushed and released *on the thread that created the
  Context object*, which leaves that push on the driver stack (the CUDA driver API: "unlike cuCtxDestroy()
  [cuDevicePrimaryCtxRelease] does not pop the context from stack in any circumstances"); **called from any other
  thread it releases nothing** (pycuda's "leaked out-of-thread context" branch) but still marks the object invalid.
  A second ``detach()`` raises ``LogicError`` ("cannot detach from invalid context").
* **Everything that allocates needs a current context** (pycuda's ``context_dependent``: "explicit_context_dependent
  failed: invalid device context - no currently active context?"): ``mem_alloc``, ``pagelocked_empty``,
  ``Stream()``, ``Event()``, ``mem_get_info``. ``mem_alloc`` past the device memory raises ``MemoryError``
  ("cuMemAlloc failed: out of memory"). ``DeviceAllocation.free()`` activates the allocation's context first
  (``scoped_context_activation``): from a thread other than the one that created that context, with it not current,
  the free fails and pycuda only prints a warning (``CUDAPP_CATCH_CLEANUP_ON_DEAD_CONTEXT``), so the memory leaks.
* **Streams are queues.** ``memcpy_htod_async``/``memcpy_dtoh_async``, ``Event.record`` and TensorRT's
  ``execute_async_v3`` only enqueue; the work happens, in order, at ``Stream.synchronize()`` (or
  ``Context.synchronize()``, or a synchronous ``memcpy_*``). An event's ``time_since`` raises ``LogicError``
  ("cuEventElapsedTime failed: device not ready") until both events have completed, and ("invalid resource handle")
  for an event never recorded. ``Stream.handle`` is an ``int`` (pycuda's ``handle_int``), what TensorRT's
  ``execute_async_v3(stream_handle: int)`` takes.

Sources: pycuda ``src/cpp/cuda.hpp`` (``context``, ``primary_context``, ``context_push``, ``scoped_context_activation``,
``stream``, ``device_allocation``) and the CUDA driver API reference, "Primary Context Management". Inspection helpers
for the tests (``driver_stack()``, ``pycuda_stack()``, ``primary_refcount()``, ``live_device_bytes()``, ...) are
not part of pycuda.
"""
from __future__ import annotations

import importlib.machinery
import itertools
import threading
import types
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["make_cuda", "Error", "LogicError", "MemoryError", "RuntimeError", "LaunchError"]

_builtin_runtime_error = RuntimeError


class Error(Exception):
    """``pycuda._driver.Error``: the base of pycuda's CUDA errors."""


class LogicError(Error):
    """``pycuda._driver.LogicError``: invalid context, invalid value, not ready, ..."""


class MemoryError(Error):  # noqa: A001 - pycuda's own name
    """``pycuda._driver.MemoryError``: out of memory."""


class RuntimeError(Error):  # noqa: A001 - pycuda's own name
    """``pycuda._driver.RuntimeError``: no device, no driver."""


class LaunchError(Error):
    """``pycuda._driver.LaunchError``."""


NO_CONTEXT = "explicit_context_dependent failed: invalid device context - no currently active context?"
CONTEXT_OVERHEAD = 256 << 20  # device memory a live primary context takes (what mem_get_info shows)


class _Driver:
    """The process-wide state: devices, primary contexts, allocations, streams and the per-thread stacks."""

    def __init__(self, gpu_name: str, cc: Tuple[int, int], count: int, total_memory: int, driver_version: int):
        self.gpu_name, self.cc, self.count = gpu_name, tuple(cc), int(count)
        self.total_memory, self.driver_version = int(total_memory), int(driver_version)
        self.initialized = False
        self.lock = threading.RLock()
        self.tls = threading.local()
        self.refcount: Dict[int, int] = {}
        self.handles: Dict[int, int] = {}  # device -> live primary context handle
        self.alive: set = set()  # live context handles
        self.next_handle = itertools.count(0x1000, 0x10)
        self.next_ptr = itertools.count(0x7F0000000000, 1 << 20)
        self.next_stream = itertools.count(0x55000000, 0x100)
        self.device_mem: Dict[int, Tuple[int, np.ndarray]] = {}  # ptr -> (context handle, bytes)
        self.host_live = 0
        self.streams: Dict[int, "Any"] = {}
        self.clock_ms = 0.0
        self.leaks: List[str] = []

    # per-thread stacks -----------------------------------------------------------------------------------------
    def pystack(self) -> List[Any]:
        if not hasattr(self.tls, "py"):
            self.tls.py, self.tls.drv = [], []
        return self.tls.py

    def drvstack(self) -> List[int]:
        self.pystack()
        return self.tls.drv

    def current(self, except_: Any = None) -> Any:
        """pycuda's ``context::current_context``: the top valid Context of this thread's pycuda stack (invalid
        entries and ``except_`` are popped on the way)."""
        st = self.pystack()
        while st:
            top = st[-1]
            if top is not except_ and top.valid:
                return top
            st.pop()
        return None

    def require_context(self) -> Any:
        ctx = self.current()
        drv = self.drvstack()
        if ctx is None or not drv or drv[-1] != ctx.handle or ctx.handle not in self.alive:
            raise LogicError(NO_CONTEXT)
        return ctx

    def require_init(self, what: str) -> None:
        if not self.initialized:
            raise LogicError(f"{what} failed: initialization error")

    # primary contexts ------------------------------------------------------------------------------------------
    def retain(self, dev: int) -> int:
        with self.lock:
            if self.refcount.get(dev, 0) == 0:
                h = next(self.next_handle)
                self.handles[dev] = h
                self.alive.add(h)
            self.refcount[dev] = self.refcount.get(dev, 0) + 1
            return self.handles[dev]

    def release(self, dev: int) -> None:
        with self.lock:
            if self.refcount.get(dev, 0) <= 0:
                raise LogicError("cuDevicePrimaryCtxRelease failed: invalid device context")
            self.refcount[dev] -= 1
            if self.refcount[dev] == 0:  # the context is reset: its memory and streams are gone
                h = self.handles.pop(dev)
                self.alive.discard(h)
                for ptr in [p for p, (hh, _) in self.device_mem.items() if hh == h]:
                    del self.device_mem[ptr]
                for sh in [s for s, st in self.streams.items() if st.ctx_handle == h]:
                    del self.streams[sh]

    def run_stream(self, handle: int) -> None:
        st = self.streams.get(handle)
        if st is None:
            return
        while st.queue:
            op = st.queue.pop(0)
            op()


def make_cuda(gpu_name: str = "Orin", cc: Tuple[int, int] = (8, 7), count: int = 1, total_memory: int = 8 << 30,
              driver_version: int = 12060) -> types.ModuleType:
    """A fake ``pycuda.driver`` module with one shared :class:`_Driver` state (``module._driver``)."""
    d = _Driver(gpu_name, cc, count, total_memory, driver_version)
    m = types.ModuleType("pycuda.driver")
    m.__spec__ = importlib.machinery.ModuleSpec("pycuda.driver", None)
    m._driver = d
    m.Error, m.LogicError, m.MemoryError, m.RuntimeError, m.LaunchError = (Error, LogicError, MemoryError,
                                                                           RuntimeError, LaunchError)

    def init(flags: int = 0) -> None:
        if d.count <= 0:
            raise RuntimeError("cuInit failed: no CUDA-capable device is detected")
        d.initialized = True

    def get_driver_version() -> int:
        return d.driver_version

    class Context:
        """pycuda's ``context`` / ``primary_context`` (only what pand uses)."""

        def __init__(self, dev: int, handle: int):
            self.dev, self.handle, self.valid = dev, handle, True
            self.thread = threading.get_ident()

        def push(self) -> None:
            with d.lock:
                if self.handle not in d.alive:
                    raise LogicError("cuCtxPushCurrent failed: invalid device context")
                py, drv = d.pystack(), d.drvstack()
                if py and drv:  # prepare_context_switch
                    drv.pop()
                drv.append(self.handle)
                py.append(self)

        @staticmethod
        def pop() -> None:
            with d.lock:
                py, drv = d.pystack(), d.drvstack()
                if py and drv:  # prepare_context_switch
                    drv.pop()
                if not py:
                    raise LogicError("context::pop failed: invalid device context - cannot pop non-current context")
                py.pop()
                cur = d.current()
                if cur is not None:
                    drv.append(cur.handle)

        def detach(self) -> None:
            with d.lock:
                if not self.valid:
                    raise LogicError("context::detach failed: invalid device context - cannot detach from invalid "
                                     "context")
                active = d.current() is self
                if active:
                    d.release(self.dev)
                elif self.thread == threading.get_ident():
                    d.drvstack().append(self.handle)  # cuCtxPushCurrent; the release does not pop it
                    d.release(self.dev)
                else:
                    d.leaks.append(f"out-of-thread detach of the context of device {self.dev}")
                self.valid = False
                if active:
                    new = d.current(except_=self)
                    if new is not None:
                        d.drvstack().append(new.handle)

        @staticmethod
        def synchronize() -> None:
            ctx = d.require_context()
            for h, st in list(d.streams.items()):
                if st.ctx_handle == ctx.handle:
                    d.run_stream(h)

        @staticmethod
        def get_device() -> "Device":
            return Device(d.require_context().dev)

    class Device:
        def __init__(self, i: int):
            d.require_init("cuDeviceGet")
            if not 0 <= int(i) < d.count:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")
            self.i = int(i)

        @staticmethod
        def count() -> int:
            d.require_init("cuDeviceGetCount")
            return d.count

        def name(self) -> str:
            return d.gpu_name

        def compute_capability(self) -> Tuple[int, int]:
            return d.cc

        def total_memory(self) -> int:
            return d.total_memory

        def retain_primary_context(self) -> Context:
            return Context(self.i, d.retain(self.i))

    class DeviceAllocation:
        def __init__(self, nbytes: int):
            ctx = d.require_context()
            if nbytes <= 0:
                raise LogicError("cuMemAlloc failed: invalid argument")
            if used_device_bytes() + nbytes > d.total_memory:
                raise MemoryError("cuMemAlloc failed: out of memory")
            self.ptr, self.nbytes, self.ctx, self.valid = next(d.next_ptr), int(nbytes), ctx, True
            d.device_mem[self.ptr] = (ctx.handle, np.zeros(int(nbytes), np.uint8))

        def __int__(self) -> int:
            return self.ptr

        __index__ = __int__

        def free(self) -> None:
            with d.lock:
                if not self.valid:
                    raise LogicError("device_allocation::free failed: invalid resource handle")
                ok = self.ctx.valid and (d.current() is self.ctx or self.ctx.thread == threading.get_ident())
                if ok:
                    d.device_mem.pop(self.ptr, None)
                else:  # pycuda prints "a clean-up operation failed (dead context maybe?)" and goes on
                    d.leaks.append(f"device allocation {self.ptr:#x}")
                    warnings.warn("PyCUDA WARNING: a clean-up operation failed (dead context maybe?)")
                self.valid = False

    class HostAllocation:
        def __init__(self, nbytes: int):
            d.require_context()
            self.nbytes, self.valid = nbytes, True
            d.host_live += 1

        def free(self) -> None:
            if self.valid:
                self.valid = False
                d.host_live -= 1

    class _Pinned(np.ndarray):
        """A page-locked array: ``.base`` is its :class:`HostAllocation`, as for pycuda's ``pagelocked_empty``."""

        _alloc: Optional[HostAllocation] = None

        @property
        def base(self):  # noqa: D401
            return self._alloc

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        dtype = np.dtype(dtype)
        arr = np.zeros(shape, dtype)
        alloc = HostAllocation(arr.nbytes)
        out = arr.view(_Pinned)
        out._alloc = alloc
        return out

    class Stream:
        def __init__(self, flags: int = 0):
            ctx = d.require_context()
            self.ctx_handle = ctx.handle
            self.handle = next(d.next_stream)  # pycuda: Stream.handle is handle_int(), an int
            self.queue: List[Callable[[], None]] = []
            d.streams[self.handle] = self

        def synchronize(self) -> None:
            d.run_stream(self.handle)

        def is_done(self) -> bool:
            return not self.queue

    class Event:
        def __init__(self, flags: int = 0):
            d.require_context()
            self.recorded = self.completed = False
            self.t = 0.0

        def record(self, stream: Optional[Stream] = None) -> "Event":
            if stream is not None and not isinstance(stream, Stream):
                raise TypeError(f"record(): incompatible function arguments: stream must be a Stream, got "
                                f"{type(stream).__name__}")
            self.recorded, self.completed = True, False

            def done() -> None:
                self.completed, self.t = True, d.clock_ms

            if stream is None:
                done()
            else:
                stream.queue.append(done)
            return self

        def synchronize(self) -> "Event":
            for h in list(d.streams):
                d.run_stream(h)
            return self

        def query(self) -> bool:
            return self.completed

        def time_since(self, start: "Event") -> float:
            if not (self.recorded and start.recorded):
                raise LogicError("cuEventElapsedTime failed: invalid resource handle")
            if not (self.completed and start.completed):
                raise LogicError("cuEventElapsedTime failed: device not ready")
            return self.t - start.t

    def _device_view(ptr: Any, nbytes: int, what: str) -> np.ndarray:
        p = int(ptr)
        for base, (h, buf) in d.device_mem.items():
            if base <= p < base + buf.size:
                if h not in d.alive:
                    break
                if p - base + nbytes > buf.size:
                    raise LogicError(f"{what} failed: invalid argument")
                return buf[p - base:p - base + nbytes]
        raise LogicError(f"{what} failed: invalid argument")

    def _raw(a: np.ndarray) -> np.ndarray:
        return a.view(np.ndarray).reshape(-1).view(np.uint8)

    def _enqueue(stream: Optional[Stream], op: Callable[[], None], what: str) -> None:
        d.require_context()
        if stream is None:
            op()  # the legacy default stream: the fake runs it at once
        elif not isinstance(stream, Stream):
            raise TypeError(f"{what}(): incompatible function arguments: stream must be a Stream or None")
        else:
            stream.queue.append(op)

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Optional[Stream] = None) -> None:
        _device_view(dest, src.nbytes, "cuMemcpyHtoDAsync")  # checked when enqueued, read when run

        def op() -> None:
            _device_view(dest, src.nbytes, "cuMemcpyHtoDAsync")[:] = _raw(np.ascontiguousarray(src))

        _enqueue(stream, op, "memcpy_htod_async")

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Optional[Stream] = None) -> None:
        _device_view(src, dest.nbytes, "cuMemcpyDtoHAsync")

        def op() -> None:
            _raw(dest)[:] = _device_view(src, dest.nbytes, "cuMemcpyDtoHAsync")

        _enqueue(stream, op, "memcpy_dtoh_async")

    def memcpy_htod(dest: Any, src: np.ndarray) -> None:
        d.require_context()
        _device_view(dest, src.nbytes, "cuMemcpyHtoD")[:] = _raw(np.ascontiguousarray(src))

    def memcpy_dtoh(dest: np.ndarray, src: Any) -> None:
        d.require_context()
        _raw(dest)[:] = _device_view(src, dest.nbytes, "cuMemcpyDtoH")

    def used_device_bytes() -> int:
        return sum(buf.size for _, buf in d.device_mem.values()) + CONTEXT_OVERHEAD * len(d.alive)

    def mem_get_info() -> Tuple[int, int]:
        d.require_context()
        return d.total_memory - used_device_bytes(), d.total_memory

    m.init, m.get_driver_version = init, get_driver_version
    m.Context, m.Device, m.Stream, m.Event = Context, Device, Stream, Event
    m.DeviceAllocation, m.HostAllocation = DeviceAllocation, HostAllocation
    m.mem_alloc, m.pagelocked_empty, m.mem_get_info = DeviceAllocation, pagelocked_empty, mem_get_info
    m.memcpy_htod_async, m.memcpy_dtoh_async, m.memcpy_htod, m.memcpy_dtoh = (memcpy_htod_async, memcpy_dtoh_async,
                                                                              memcpy_htod, memcpy_dtoh)
    # inspection helpers for the tests (not pycuda API)
    m.device_view = _device_view
    m.driver_stack = lambda: list(d.drvstack())
    m.pycuda_stack = lambda: list(d.pystack())
    m.primary_refcount = lambda dev=0: d.refcount.get(dev, 0)
    m.live_device_bytes = lambda: sum(buf.size for _, buf in d.device_mem.values())
    m.live_host_allocations = lambda: d.host_live
    m.leaks = d.leaks
    return m


def install_package(cuda: types.ModuleType) -> types.ModuleType:
    """A ``pycuda`` package module whose ``driver`` is ``cuda`` (for ``sys.modules``)."""
    pkg = types.ModuleType("pycuda")
    pkg.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    pkg.__path__ = []
    pkg.__version__ = "2025.1.2"
    pkg.VERSION_TEXT = "2025.1.2"
    pkg.driver = cuda
    return pkg


del _builtin_runtime_error
