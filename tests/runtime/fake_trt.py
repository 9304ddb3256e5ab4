"""Recording stand-ins for the ``tensorrt`` and ``pycuda.driver`` modules (contract tests that run without a GPU).

Only the calls pand makes exist, with the shapes of the TensorRT 10.x / 11.x Python API (docs/deployment.md): on 11.x
the removed ``BuilderFlag.FP16`` / ``INT8`` are absent, so using them raises AttributeError as the real bindings do.
Every call is appended to ``module.calls`` as a tuple.
"""
from __future__ import annotations

import importlib.machinery
import threading
import types
from enum import IntEnum
from typing import List, Optional, Sequence

import numpy as np


def _enum(name: str, members: Sequence[str]) -> type:
    return IntEnum(name, {m: i for i, m in enumerate(members)})


def make_trt(version: str = "10.3.0", parse_errors: Sequence[str] = (), builds: Sequence[Optional[bytes]] = (b"PLAN",),
             cache_error: Optional[Exception] = None, cache_mismatch: bool = False) -> types.ModuleType:
    """A fake ``tensorrt`` module. ``builds``: what successive ``build_serialized_network`` calls return (None =
    failure); ``parse_errors``: parser messages (non-empty = the parse fails)."""
    m = types.ModuleType("tensorrt")
    m.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    m.__version__ = version
    calls: List[tuple] = []
    m.calls = calls
    major = int(version.split(".")[0])
    flags = ["FP16", "BF16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "TF32"] if major < 11 else \
        ["DEBUG", "REFIT", "TF32", "VERSION_COMPATIBLE"]
    m.BuilderFlag = _enum("BuilderFlag", flags)
    m.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    m.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE"])
    m.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    build_results = list(builds)

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            calls.append(("Logger", severity))

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            calls.append(("set_shape", name, tuple(mn), tuple(opt), tuple(mx)))

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+timings"

    class Config:
        def __init__(self):
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile",))

        def set_flag(self, flag):
            calls.append(("set_flag", flag.name))

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag.name))

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            if cache_error is not None:
                raise cache_error
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            self.cache = cache
            return not cache_mismatch

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return types.SimpleNamespace(flags=flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network", network.flags))
            return build_results.pop(0) if build_results else None

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = len(parse_errors)

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            return not parse_errors

        def get_error(self, i):
            return f"In node {i}: {parse_errors[i]}"

    m.Logger, m.Builder, m.OnnxParser = Logger, Builder, OnnxParser
    m.nptype = lambda dt: np.float32
    return m


def make_cuda(gpu_name: str = "Orin", cc: tuple = (8, 7), count: int = 1) -> types.ModuleType:
    """A fake ``pycuda.driver``: device memory is a dict of numpy arrays keyed by fake pointers; every allocation and
    free is recorded so tests can check that ``close()`` releases everything."""
    m = types.ModuleType("pycuda.driver")
    m.__spec__ = importlib.machinery.ModuleSpec("pycuda.driver", None)
    m.calls = []
    m.memory = {}
    m.live_contexts = [0]
    state = {"next": 4096}

    class Alloc:
        def __init__(self, nbytes):
            self.ptr = state["next"]
            state["next"] += nbytes + 256
            m.memory[self.ptr] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return self.ptr

        def free(self):
            m.calls.append(("free", self.ptr))
            m.memory.pop(self.ptr, None)

    class HostAlloc:
        def free(self):
            m.calls.append(("host_free",))

    class Context:
        def push(self):
            m.calls.append(("push", threading.get_ident()))

        def pop(self):
            m.calls.append(("pop", threading.get_ident()))

        def detach(self):
            m.calls.append(("detach",))
            m.live_contexts[0] -= 1

    class Device:
        @staticmethod
        def count():
            return count

        def __init__(self, i):
            self.i = i

        def name(self):
            return gpu_name

        def compute_capability(self):
            return cc

        def retain_primary_context(self):
            m.live_contexts[0] += 1
            return Context()

    class Stream:
        handle = 1

        def synchronize(self):
            pass

    class Event:
        def record(self, stream=None):
            pass

        def time_since(self, other):
            return 0.25

    def pagelocked_empty(n, dtype):
        a = np.zeros(n, dtype)
        holder = np.ndarray(a.shape, a.dtype, buffer=a)  # an ndarray whose .base we can tag
        m.calls.append(("pagelocked_empty", n))
        return _Tagged(holder, HostAlloc())

    class _Tagged(np.ndarray):
        def __new__(cls, arr, alloc):
            obj = np.asarray(arr).view(cls)
            obj._alloc = alloc
            return obj

        @property
        def base(self):  # pycuda: the HostAllocation that owns the page-locked memory
            return getattr(self, "_alloc", None)

    def memcpy_htod_async(dst, src, stream=None):
        buf = m.memory[int(dst)]
        raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        buf[:raw.size] = raw

    def memcpy_dtoh_async(dst, src, stream=None):
        raw = m.memory[int(src)]
        view = dst.view(np.uint8).reshape(-1)
        view[:] = raw[:view.size]

    m.init = lambda: None
    m.Device, m.Stream, m.Event = Device, Stream, Event
    m.pagelocked_empty, m.mem_alloc = pagelocked_empty, Alloc
    m.memcpy_htod_async, m.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    return m


def add_runtime(trt: types.ModuleType, cuda: types.ModuleType, classes: int = 4, sample=(3, 8, 8), max_batch: int = 4,
                delay: float = 0.0) -> None:
    """Give the fake ``trt`` a Runtime whose engine computes ``logits[:, c] = sum(x) * (c + 1)`` by reading and writing
    the fake device memory (``delay`` seconds inside ``execute_async_v3`` to expose unlocked concurrent calls)."""
    import time

    feat = int(np.prod(sample))

    class Context:
        def __init__(self):
            self.addr, self.shape = {}, None

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return (self.shape[0], classes)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = int(ptr)

        def execute_async_v3(self, stream):
            n = self.shape[0]
            x = cuda.memory[self.addr["input"]].view(np.float32)[:n * feat].reshape(n, feat).copy()
            if delay:
                time.sleep(delay)
            out = x.sum(1, keepdims=True) * np.arange(1, classes + 1, dtype=np.float32)
            cuda.memory[self.addr["logits"]].view(np.float32)[:out.size] = out.reshape(-1)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("input", "logits")[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return (-1, *sample) if name == "input" else (-1, classes)

        def get_tensor_profile_shape(self, name, i):
            return (1, *sample), (2, *sample), (max_batch, *sample)

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"PLAN" else None

    trt.Runtime = Runtime
