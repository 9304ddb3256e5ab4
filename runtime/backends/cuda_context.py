"""One retained primary CUDA context whose release works from any thread (pycuda), and a scope that makes it current.

pycuda ties a ``Context`` object to the thread that created it: ``Context.detach()`` called on another thread releases
nothing (pycuda's ``context::detach`` skips its "out-of-thread" context), and on the creating thread, with the context
not current, it pushes the context and calls ``cuDevicePrimaryCtxRelease``, which never pops, so a stale entry stays
on that thread's driver context stack. A backend created on one thread and closed on another (a web server's worker,
a ``with`` block in a thread pool) would leak the context, and a build helper that detaches on the caller's thread
would leave that stale entry behind on every call.

:class:`RetainedContext` therefore retains the context on a small private thread and releases it on that same thread
(which then ends, taking its stale driver entry with it); the callers only ever ``push()`` and ``pop()``, which
pycuda allows on any thread and which leave the caller's stack as they found it. :meth:`RetainedContext.release` is
idempotent and thread-safe: the context is released exactly once.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Optional

__all__ = ["RetainedContext", "on_device"]


class RetainedContext:
    """The primary context of CUDA device ``device``, retained on a private thread until :meth:`release`.

    Args:
        cuda: the ``pycuda.driver`` module (initialised).
        device: CUDA device ordinal.

    Raises:
        Whatever pycuda raises for ``Device(device).retain_primary_context()`` (``LogicError``, ``MemoryError``, ...),
        re-raised on the calling thread.
    """

    def __init__(self, cuda: Any, device: int = 0):
        self._cuda = cuda
        self.device = int(device)
        self.context: Any = None
        self.release_error: Optional[BaseException] = None
        self._error: Optional[BaseException] = None
        self._ready = threading.Event()
        self._go = threading.Event()
        self._lock = threading.Lock()
        self._released = False
        self._thread = threading.Thread(target=self._own, name=f"pand-cuda-context-{self.device}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._released = True
            raise self._error

    def _own(self) -> None:
        try:
            self.context = self._cuda.Device(self.device).retain_primary_context()
        except BaseException as e:  # noqa: BLE001 - handed to the constructor's thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._go.wait()
        try:
            self.context.detach()  # the creating thread: the release really happens
        except Exception as e:  # noqa: BLE001 - recorded; nothing else can be done about a failed release
            self.release_error = e

    def push(self) -> None:
        """Make the context current on the calling thread (pair with :meth:`pop` on the same thread)."""
        self.context.push()

    def pop(self) -> None:
        """Pop the context pushed by :meth:`push` on this thread (pycuda's static ``Context.pop``)."""
        self._cuda.Context.pop()

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Release the retained context on its own thread; any thread may call this, any number of times."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._go.set()
        self._thread.join()


@contextlib.contextmanager
def on_device(cuda: Any, device: int = 0) -> Iterator[RetainedContext]:
    """``with on_device(cuda, 0):`` runs its body with device 0's primary context current on this thread, then pops
    it and releases the context; the thread's context stack is left as it was found."""
    ctx = RetainedContext(cuda, device)
    try:
        ctx.push()
        try:
            yield ctx
        finally:
            ctx.pop()
    finally:
        ctx.release()
