"""A faithful stand-in for the part of the ``tensorrt`` 10.x / 11.x Python API that pand uses, for tests without a GPU.

Signatures, types and failure modes follow the TensorRT Python API reference (docs.nvidia.com/deeplearning/tensorrt,
"Python API": ``Builder``, ``IBuilderConfig``, ``IOptimizationProfile``, ``OnnxParser``, ``Runtime``,
``ICudaEngine``, ``IExecutionContext``, ``nptype``) and the C++ reference of the same classes:

* **Build.** ``Builder.create_network(flags: int = 0)``; on 10.x ``STRONGLY_TYPED`` is opt-in, on 11.x the network
  is always strongly typed and ``BuilderFlag.FP16``/``INT8`` do not exist (AttributeError, as in the bindings).
  ``IBuilderConfig`` starts with ``BuilderFlag.TF32`` **set** (TensorRT's default). ``build_serialized_network``
  returns ``None`` (and logs an error) instead of raising: for a network with a dynamic input and no optimisation
  profile ("Network has dynamic or shape inputs, but no optimization profile has been defined."), for a profile that
  does not cover an input or whose min/opt/max are inconsistent, for 10.x precision flags on a strongly typed
  network, and when the test asks for a failure (``strong_build_fails``, ``build_fails``).
  ``IOptimizationProfile.set_shape`` returns None and raises ``RuntimeError`` for an inconsistent min/opt/max (C++
  ``setDimensions`` returns false; the binding asserts on it), which also leaves the profile invalid;
  ``add_optimization_profile`` returns the profile index, or -1 for an invalid or empty profile.
* **Timing cache.** ``create_timing_cache(bytes)`` is noexcept in the bindings: it returns **None** for a blob that
  is not a timing cache (empty bytes make a new cache). ``set_timing_cache(cache, ignore_mismatch)`` takes an
  ``ITimingCache`` (None: TypeError, as pybind11 rejects it) and returns False for a cache of another device/version
  unless ``ignore_mismatch``.
* **Plans.** The plan records the TensorRT version, the device's compute capability, the I/O tensors (name, shape,
  ``DataType``), the profile and the builder flags. ``Runtime.deserialize_cuda_engine`` returns None (and logs the
  reason) for a blob that is not a plan, a plan of another TensorRT version or another compute capability.
* **Execution.** ``IExecutionContext.set_input_shape(name, shape) -> bool`` is False for a shape outside the
  profile; ``execute_async_v3(stream_handle: int) -> bool`` raises TypeError for anything but an int (pybind11:
  "incompatible function arguments"), and returns False (logging the reason) when an input shape or tensor address
  is unset, the stream is unknown, or no CUDA context is current. It only *enqueues*: the engine reads and writes
  device memory when the stream runs (:mod:`fake_pycuda`). The engine computes ``logits[:, c] = (c + 1) * sum(x)``
  over each row of its actual batch, in the I/O dtypes (``nptype``: FLOAT -> float32, HALF -> float16, INT8 -> int8,
  INT32 -> int32, BOOL -> bool, UINT8 -> uint8; BF16/FP8 raise TypeError, as the bindings cannot map them); an fp32
  engine built with TF32 rounds its inputs to a 10-bit mantissa first. Every executed batch size is appended to
  ``module.executed``.

``module.log`` holds what the engine's logger would print, ``module.calls`` the builder calls (for the tests that
check flags), ``module.cuda`` the :mod:`fake_pycuda` module the runtime side runs on.
"""
from __future__ import annotations

import importlib.machinery
import json
import time
import types
from enum import IntEnum
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["make_trt", "make_plan", "PLAN_MAGIC", "CACHE_MAGIC"]

PLAN_MAGIC = b"FAKETRT-PLAN\n"
CACHE_MAGIC = b"FAKETRT-TIMING\n"
_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
       "UINT8": np.uint8, "INT64": np.int64}
_DTYPES = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64", "INT4"]


def _enum(name: str, members: Sequence[str]) -> type:
    return IntEnum(name, {m: i for i, m in enumerate(members)})


def make_plan(version: str = "10.3.0", cc: Tuple[int, int] = (8, 7), sample: Sequence[int] = (3, 8, 8),
              classes: int = 4, max_batch: int = 4, opt_batch: int = 2, dtype: str = "FLOAT",
              out_dtype: Optional[str] = None, flags: Sequence[str] = (), dynamic: bool = True,
              input_name: str = "input", output_name: str = "logits") -> bytes:
    """A serialized plan as the fake builder writes it (for backend tests that do not go through the builder)."""
    batch = -1 if dynamic else int(max_batch)
    meta = {"version": version, "cc": list(cc), "flags": list(flags),
            "inputs": [[input_name, [batch, *sample], dtype]],
            "outputs": [[output_name, [batch, int(classes)], out_dtype or dtype]],
            "profile": {input_name: [[1, *sample], [int(opt_batch), *sample], [int(max_batch), *sample]]}
            if dynamic else {}}
    return PLAN_MAGIC + json.dumps(meta).encode()


def make_trt(version: str = "10.3.0", cuda: Any = None, cc: Tuple[int, int] = (8, 7),
             parse_errors: Sequence[str] = (), strong_build_fails: bool = False, build_fails: bool = False,
             sample: Sequence[int] = (3, 64, 64), classes: int = 24, dtype: str = "FLOAT",
             exec_delay: float = 0.0) -> types.ModuleType:
    """A fake ``tensorrt`` module.

    Args:
        version: ``tensorrt.__version__`` (11.x drops the FP16/INT8 builder flags).
        cuda: the :mod:`fake_pycuda` module the engines run on (needed for ``Runtime``); its compute capability is
            the device's.
        cc: the device's compute capability when ``cuda`` is not given (what plans and caches record).
        parse_errors: parser messages; non-empty makes ``parse_from_file`` fail.
        strong_build_fails / build_fails: strongly typed builds (10.x: the first attempt) / every build return None.
        sample, classes, dtype: the network the parser "reads": input ``[-1, *sample]``, output ``[-1, classes]``.
        exec_delay: seconds ``execute_async_v3`` sleeps between reading its state and enqueueing (exposes unlocked
            concurrent callers).
    """
    m = types.ModuleType("tensorrt")
    m.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    m.__version__ = version
    m.calls: List[tuple] = []
    m.log: List[str] = []
    m.executed: List[int] = []
    m.cuda = cuda
    calls, log = m.calls, m.log
    major = int(str(version).split(".")[0])
    device_cc = tuple(cuda._driver.cc) if cuda is not None else tuple(cc)
    builder_flags = ["FP16", "BF16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "TF32"] if major < 11 else \
        ["DEBUG", "REFIT", "TF32", "VERSION_COMPATIBLE"]
    m.BuilderFlag = _enum("BuilderFlag", builder_flags)
    m.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    m.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM"])
    m.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    m.DataType = _enum("DataType", _DTYPES)

    def nptype(trt_type: Any) -> type:
        name = m.DataType(int(trt_type)).name
        if name not in _NP:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return _NP[name]

    m.nptype = nptype

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self, min_severity: int = 2):
            calls.append(("Logger", min_severity))

    def error(msg: str) -> None:
        log.append(msg)

    # ---- builder --------------------------------------------------------------------------------------------
    class Network:
        def __init__(self, flags: int):
            self.flags = int(flags)
            self.inputs: List[list] = []
            self.outputs: List[list] = []

        @property
        def strongly_typed(self) -> bool:
            return major >= 11 or bool(self.flags & (1 << int(m.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger):
            self.network = network
            self._errors: List[str] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def parse_from_file(self, model: str) -> bool:
            calls.append(("parse_from_file", model))
            if not isinstance(model, str):
                raise TypeError("parse_from_file(): incompatible function arguments: model must be a str")
            if not Path(model).is_file():
                self._errors = [f"ModelImporter.cpp: Failed to parse ONNX model from file: {model}"]
                return False
            if parse_errors:
                self._errors = list(parse_errors)
                return False
            self.network.inputs = [["input", [-1, *sample], dtype]]
            self.network.outputs = [["logits", [-1, int(classes)], dtype]]
            return True

        def get_error(self, i: int) -> str:
            return f"In node {i}: {self._errors[i]}"

    class Profile:
        def __init__(self):
            self.shapes: Dict[str, list] = {}
            self.valid = True

        def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
            calls.append(("set_shape", input, tuple(min), tuple(opt), tuple(max)))
            mn, op, mx = (list(map(int, s)) for s in (min, opt, max))
            ok = len(mn) == len(op) == len(mx) and all(a <= b <= c for a, b, c in zip(mn, op, mx)) and \
                all(a >= 0 for a in mn)
            if not ok:  # C++ setDimensions returns false; the binding turns that into a RuntimeError
                self.valid = False
                raise RuntimeError(f"opt/max input provided for {input} is inconsistent with the min/opt input: "
                                   f"{mn} / {op} / {mx}")
            self.shapes[input] = [mn, op, mx]

    class TimingCache:
        def __init__(self, meta: dict):
            self.meta = meta

        def serialize(self) -> bytes:
            return CACHE_MAGIC + json.dumps(self.meta).encode()

    class Config:
        def __init__(self):
            self.flags = {"TF32"}  # TensorRT's default
            self.profiles: List[Profile] = []
            self.pool: Dict[str, int] = {}
            self.cache: Optional[TimingCache] = None

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            calls.append(("set_memory_pool_limit", pool, pool_size))
            self.pool[m.MemoryPoolType(int(pool)).name] = int(pool_size)

        def add_optimization_profile(self, profile: Profile) -> int:
            calls.append(("add_optimization_profile",))
            if not isinstance(profile, Profile):
                raise TypeError("add_optimization_profile(): incompatible function arguments")
            if not profile.valid or not profile.shapes:
                error("IBuilderConfig::addOptimizationProfile: Error Code 3: API Usage Error (profile is not valid)")
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_flag(self, flag: Any) -> None:
            calls.append(("set_flag", flag.name))
            self.flags.add(m.BuilderFlag(int(flag)).name)

        def clear_flag(self, flag: Any) -> None:
            calls.append(("clear_flag", flag.name))
            self.flags.discard(m.BuilderFlag(int(flag)).name)

        def get_flag(self, flag: Any) -> bool:
            return m.BuilderFlag(int(flag)).name in self.flags

        def create_timing_cache(self, serialized_timing_cache: bytes) -> Optional[TimingCache]:
            data = bytes(serialized_timing_cache)
            calls.append(("create_timing_cache", data))
            if not data:
                return TimingCache({"version": version, "cc": list(device_cc), "entries": 0})
            if not data.startswith(CACHE_MAGIC):
                return None  # noexcept in the bindings: garbage gives None, not an exception
            try:
                return TimingCache(json.loads(data[len(CACHE_MAGIC):]))
            except ValueError:
                return None

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            calls.append(("set_timing_cache", ignore_mismatch))
            if not isinstance(cache, TimingCache):
                raise TypeError("set_timing_cache(): incompatible function arguments. The following argument types "
                                "are supported: (self: tensorrt.IBuilderConfig, cache: tensorrt.ITimingCache, "
                                f"ignore_mismatch: bool) -> bool; invoked with {type(cache).__name__}")
            mismatch = cache.meta.get("version") != version or list(cache.meta.get("cc", [])) != list(device_cc)
            if mismatch and not ignore_mismatch:
                error("IBuilderConfig::setTimingCache: timing cache was created on a different platform")
                return False
            self.cache = cache
            return True

        def get_timing_cache(self) -> Optional[TimingCache]:
            return self.cache

    class HostMemory:
        def __init__(self, data: bytes):
            self._data = data
            self.nbytes = len(data)

        def __bytes__(self) -> bytes:
            return self._data

    class Builder:
        def __init__(self, logger: Logger):
            calls.append(("Builder",))

        def create_network(self, flags: int = 0) -> Network:
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> Optional[HostMemory]:
            calls.append(("build_serialized_network", network.flags))
            if not network.inputs:
                error("Network must have at least one input and one output.")
                return None
            if network.strongly_typed and config.flags & {"FP16", "INT8", "BF16"}:
                error("Builder flags FP16/INT8/BF16 cannot be set with a strongly typed network.")
                return None
            prof = config.profiles[0] if config.profiles else None
            for name, shape, _ in network.inputs:
                if -1 not in shape:
                    continue
                if prof is None:
                    error("Network has dynamic or shape inputs, but no optimization profile has been defined.")
                    return None
                if name not in prof.shapes:
                    error(f"Optimization profile 0 is missing values for the dynamic input {name}.")
                    return None
                for dims in prof.shapes[name]:
                    if len(dims) != len(shape) or any(s != -1 and s != v for s, v in zip(shape, dims)):
                        error(f"Profile shapes {prof.shapes[name]} do not match the input {name} {shape}.")
                        return None
            if build_fails or (strong_build_fails and network.strongly_typed):
                error("Could not find any implementation for node /conv (strongly typed network).")
                return None
            if config.cache is not None:
                config.cache.meta["entries"] = int(config.cache.meta.get("entries", 0)) + 1
            meta = {"version": version, "cc": list(device_cc), "flags": sorted(config.flags),
                    "inputs": network.inputs, "outputs": network.outputs,
                    "profile": dict(prof.shapes) if prof else {}, "pool": config.pool,
                    "strongly_typed": network.strongly_typed}
            return HostMemory(PLAN_MAGIC + json.dumps(meta).encode())

    # ---- runtime --------------------------------------------------------------------------------------------
    def _need_context() -> Any:
        if cuda is None:
            raise RuntimeError("this fake tensorrt has no fake pycuda (make_trt(cuda=...))")
        d = cuda._driver
        try:
            return d.require_context()
        except Exception:  # noqa: BLE001
            return None

    class Engine:
        def __init__(self, meta: dict):
            self.meta = meta
            self.io = {t[0]: (list(t[1]), t[2], "INPUT") for t in meta["inputs"]}
            self.io.update({t[0]: (list(t[1]), t[2], "OUTPUT") for t in meta["outputs"]})
            self.names = [t[0] for t in meta["inputs"]] + [t[0] for t in meta["outputs"]]
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> Any:
            return getattr(m.TensorIOMode, self.io[name][2]) if name in self.io else m.TensorIOMode.NONE

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            return tuple(self.io[name][0])

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(m.DataType, self.io[name][1])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Tuple[int, ...]]:
            shapes = self.meta["profile"].get(name)
            if shapes is None or profile_index != 0:
                raise RuntimeError(f"get_tensor_profile_shape: no profile {profile_index} for {name}")
            return [tuple(s) for s in shapes]

        def create_execution_context(self) -> "ExecutionContext":
            ctx = _need_context()
            if ctx is None:
                error("IExecutionContext creation failed: no CUDA context is current")
                return None
            return ExecutionContext(self, ctx.handle)

    class ExecutionContext:
        def __init__(self, engine: Engine, ctx_handle: int):
            self.engine, self.ctx_handle = engine, ctx_handle
            self.shapes: Dict[str, Tuple[int, ...]] = {}
            self.addr: Dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
            if name not in self.engine.io or self.engine.io[name][2] != "INPUT":
                error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error ({name} is not an input)")
                return False
            want, shape = self.engine.io[name][0], tuple(int(s) for s in shape)
            prof = self.engine.meta["profile"].get(name)
            ok = len(shape) == len(want) and all(w == -1 or w == s for w, s in zip(want, shape))
            if ok and prof:
                ok = all(lo <= s <= hi for lo, s, hi in zip(prof[0], shape, prof[2]))
            if not ok:
                error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Given invalid tensor dims "
                      f"{list(shape)} for {name}: outside the profile {prof})")
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            shape = self.engine.io[name][0]
            if self.engine.io[name][2] == "INPUT":
                return tuple(self.shapes.get(name, shape))
            batch = next(iter(self.shapes.values()), (-1,))[0] if self.shapes else -1
            return (batch if shape[0] == -1 else shape[0], *shape[1:])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if not isinstance(memory, int):
                raise TypeError("set_tensor_address(): incompatible function arguments: memory must be an int")
            self.addr[name] = memory
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if not isinstance(stream_handle, int) or isinstance(stream_handle, bool):
                raise TypeError("execute_async_v3(): incompatible function arguments. The following argument types "
                                "are supported:\n    1. (self: tensorrt.IExecutionContext, stream_handle: int) -> "
                                f"bool\n\nInvoked with: {type(stream_handle).__name__}")
            ctx = _need_context()
            if ctx is None or ctx.handle != self.ctx_handle:
                error("IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (invalid device context)")
                return False
            d = cuda._driver
            stream = d.streams.get(stream_handle)
            if stream is None or stream.ctx_handle != self.ctx_handle:
                error("IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (invalid resource handle)")
                return False
            inp = [n for n in self.engine.names if self.engine.io[n][2] == "INPUT"]
            for n in inp:
                if n not in self.shapes:
                    error(f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check failed, "
                          f"condition: inputDimensionsSpecified. {n} has no input shape set)")
                    return False
            for n in self.engine.names:
                if n not in self.addr:
                    error(f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (address of {n} not set)")
                    return False
            shape = self.shapes[inp[0]]
            out_name = next(n for n in self.engine.names if self.engine.io[n][2] == "OUTPUT")
            in_dt, out_dt = nptype(self.engine.get_tensor_dtype(inp[0])), nptype(
                self.engine.get_tensor_dtype(out_name))
            classes = self.engine.io[out_name][0][1]
            tf32 = "TF32" in self.engine.meta["flags"] and in_dt == np.float32
            in_addr, out_addr = self.addr[inp[0]], self.addr[out_name]
            if exec_delay:
                time.sleep(exec_delay)

            def run() -> None:
                n, feat = shape[0], int(np.prod(shape[1:]))
                nbytes = n * feat * np.dtype(in_dt).itemsize
                x = cuda.device_view(in_addr, nbytes, "enqueueV3").view(in_dt).reshape(n, feat).astype(np.float64)
                if tf32:  # TF32: 10-bit mantissa
                    x = np.round(x * 1024.0 / 2.0 ** np.floor(np.log2(np.abs(x) + 1e-30))) / 1024.0 * \
                        2.0 ** np.floor(np.log2(np.abs(x) + 1e-30))
                out = x.sum(1, keepdims=True) * np.arange(1, classes + 1, dtype=np.float64)
                raw = out.astype(out_dt).reshape(-1)
                cuda.device_view(out_addr, raw.nbytes, "enqueueV3")[:] = raw.view(np.uint8)
                d.clock_ms += 0.25
                m.executed.append(n)

            stream.queue.append(run)
            return True

    class Runtime:
        def __init__(self, logger: Logger):
            pass

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> Optional[Engine]:
            data = bytes(serialized_engine)
            if not data.startswith(PLAN_MAGIC):
                error("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion "
                      "magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
                return None
            try:
                meta = json.loads(data[len(PLAN_MAGIC):])
            except ValueError:
                error("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (corrupt plan)")
                return None
            if meta["version"] != version:
                error(f"IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan file is not "
                      f"compatible with this version of TensorRT, expecting library version {version} got "
                      f"{meta['version']}, please rebuild.)")
                return None
            if tuple(meta["cc"]) != device_cc:
                error(f"IRuntime::deserializeCudaEngine: Error Code 1: Serialization (the engine plan file is "
                      f"generated on an incompatible device, expecting compute {device_cc} got compute "
                      f"{tuple(meta['cc'])}, please rebuild.)")
                return None
            return Engine(meta)

    m.Logger, m.Builder, m.OnnxParser, m.Runtime = Logger, Builder, OnnxParser, Runtime
    m.plan_info = lambda plan: json.loads(bytes(plan)[len(PLAN_MAGIC):])
    return m
