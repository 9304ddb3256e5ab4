"""ONNX -> serialized TensorRT engine, torch-free: the one builder behind ``pand-engine`` and ``pand-export --format
trt`` (TensorRT 10.x and 11.x Python API).

Build recipe:

* TensorRT >= 10 is required (:func:`.trt_version.check_trt_version`): 8.x/9.x lack ``build_serialized_network``
  without ``EXPLICIT_BATCH``, name-based I/O and ``execute_async_v3``.
* ``builder.create_network(flags)``: explicit batch is the only mode since 10.0. TensorRT 11 is always strongly
  typed (``STRONGLY_TYPED`` is deprecated and ignored there), so the network is created with no flag and no precision
  flag is set: the FP16 / Q/DQ INT8 types of the ONNX decide the precision. On 10.x ``STRONGLY_TYPED`` is opt-in, so
  the network is created strongly typed first; only if that build fails is it retried weakly typed with the
  TRT-10-only ``BuilderFlag.FP16`` / ``INT8`` flags (both gone in 11).
* ``BuilderFlag.TF32`` is on by default and makes fp32 convolutions on Ampere+ (every Jetson Orin) differ from
  PyTorch by ~1e-3; it is cleared unless ``tf32=True`` (then the parity gate uses :data:`TF32_TOLERANCE`).
* ``OnnxParser.parse_from_file`` with every parser error in the message.
* one optimisation profile min/opt/max over the batch axis (:func:`batch_profile`; a shape refused by ``set_shape``
  or a profile refused by ``add_optimization_profile``, which returns -1, is an error), ``set_memory_pool_limit``.
* a timing cache read from and written back to a file; an unreadable, corrupt or mismatching cache is an error (it
  names the file), a cache that cannot be written back is a warning recorded in the returned info.
* ``build_serialized_network`` (``build_engine`` is gone since 10.0); the plan is written atomically.

Not verified on real TensorRT here (no CUDA GPU, TensorRT not installable); tests/runtime/test_trt_contract.py builds
with a faithful fake of the ``tensorrt`` module (tests/fakes/fake_tensorrt.py: no profile for a dynamic input, a
garbage timing cache and TF32 behave as in TensorRT), ``bench/mutate_trt.py`` checks that those tests catch
single-line mistakes here, and tests/export/test_export_trt.py builds real engines wherever TensorRT and a GPU exist.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from ._lazy import require_tensorrt
from .backends.trt_backend import device_info
from .errors import PandError
from .io import atomic_write_bytes
from .metrics import TOLERANCES, Tolerance
from .trt_version import MIN_TRT_MAJOR, check_trt_version, trt_major  # noqa: F401 - re-exported (__all__)

__all__ = ["MIN_TRT_MAJOR", "TF32_TOLERANCE", "trt_major", "check_trt_version", "batch_profile", "engine_tolerance",
           "build_serialized", "build_engine", "default_timing_cache"]

log = logging.getLogger("pand.engine")

Shape = Tuple[int, ...]
#: fp32 engine built with ``--tf32``: TF32 convolutions (10-bit mantissa) differ from PyTorch fp32 by a few 1e-3 on
#: the logits (issue 17: 1.8e-3 .. 3.8e-3 on the demo student), so the element-wise gate is 1e-2 and top-1 flips
#: within a 1e-2 reference margin are excused; agreement must still be 100% otherwise.
TF32_TOLERANCE = Tolerance(max_abs=1e-2, min_cosine=0.9999, min_agreement=1.0, tie_margin=1e-2)
#: What the TensorRT 10 weak-typing retry sets per precision (named in its log line).
WEAK_TYPING_FLAGS = {"fp32": "no precision builder flag", "fp16": "the FP16 builder flag",
                     "int8": "the FP16 and INT8 builder flags"}


def batch_profile(input_name: str, sample_shape: Sequence[int], batch: int, max_batch: int
                  ) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """The dynamic-batch optimisation profile ``{input: (min, opt, max)}``: batch 1 .. ``max_batch``, optimal at
    ``batch`` (clamped into that range)."""
    sample = tuple(int(d) for d in sample_shape)
    opt = max(1, min(int(batch), int(max_batch)))
    return {input_name: ((1, *sample), (opt, *sample), (int(max_batch), *sample))}


def engine_tolerance(precision: str, tf32: bool, recorded: Optional[Dict[str, Any]] = None) -> Tolerance:
    """The parity gate of an engine: the bundle's recorded tolerance for its precision (or the default), replaced by
    :data:`TF32_TOLERANCE` for an fp32 engine built with TF32."""
    if precision == "fp32" and tf32:
        return TF32_TOLERANCE
    if recorded:
        known = {k: v for k, v in recorded.items() if k in Tolerance.__dataclass_fields__}
        return Tolerance(**known)
    return TOLERANCES[precision]


def default_timing_cache(cache_dir: Union[str, Path], env: Dict[str, str]) -> Path:
    """``<cache_dir>/trt/timing-<gpu>-sm<cc>-trt<version>.cache``: one reusable timing cache per GPU and version."""
    gpu = "".join(c if c.isalnum() else "-" for c in env.get("gpu_name", "gpu")).strip("-")
    return Path(cache_dir) / "trt" / f"timing-{gpu}-sm{env.get('compute_capability', '?')}-" \
                                     f"trt{env.get('trt_version', '?')}.cache"


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path, flags: int) -> Tuple[Any, Any]:
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no parser message"
        raise PandError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors}")
    return network, parser


def _add_profile(builder: Any, config: Any, profile: Dict[str, Sequence[Shape]]) -> None:
    """One optimisation profile with every input's min/opt/max; a shape or profile TensorRT refuses is a
    :class:`PandError` naming it (``set_shape`` raises or returns False, ``add_optimization_profile`` returns -1)."""
    prof = builder.create_optimization_profile()
    for name, (mn, opt, mx) in profile.items():
        why = ""
        try:
            ok = prof.set_shape(name, tuple(mn), tuple(opt), tuple(mx))
        except Exception as e:  # noqa: BLE001 - the bindings raise RuntimeError where C++ setDimensions is false
            ok, why = False, f" ({type(e).__name__}: {e})"
        if ok is False:
            raise PandError(f"TensorRT refused the optimisation profile shapes of {name!r}: min {tuple(mn)}, opt "
                            f"{tuple(opt)}, max {tuple(mx)}{why}; check --batch / --max-batch (1 <= batch <= "
                            f"max-batch)")
    index = config.add_optimization_profile(prof)
    if index is None or int(index) < 0:
        shapes = ", ".join(f"{k}: min {tuple(v[0])} opt {tuple(v[1])} max {tuple(v[2])}" for k, v in profile.items())
        raise PandError(f"TensorRT refused the optimisation profile ({shapes}); check --batch / --max-batch")


def _load_cache(config: Any, cache_bytes: bytes, cache_path: Optional[Path]) -> None:
    where = f"timing cache {cache_path}" if cache_path else "timing cache"
    fix = "delete it (it is rebuilt) or pass another --timing-cache"
    try:
        cache = config.create_timing_cache(cache_bytes)
    except Exception as e:  # noqa: BLE001 - TensorRT raises its own types for a corrupt blob
        raise PandError(f"TensorRT cannot read the {where} ({type(e).__name__}: {e}); {fix}") from None
    if cache is None:
        raise PandError(f"TensorRT cannot read the {where} (create_timing_cache returned None); {fix}")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise PandError(f"the {where} was made for another GPU or TensorRT version (set_timing_cache refused it); "
                        f"{fix}")


def build_serialized(trt: Any, onnx_path: Union[str, Path], precision: str,
                     profile: Optional[Dict[str, Sequence[Shape]]], workspace_bytes: int = 1 << 30,
                     cache_bytes: bytes = b"", cache_path: Optional[Path] = None, tf32: bool = False,
                     strongly_typed: bool = True) -> Tuple[Optional[Any], Any, Dict[str, Any]]:
    """One build attempt: ``(plan or None, builder config, {"typing", "flags"})`` (see the module docstring)."""
    major = check_trt_version(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if major < 11 and strongly_typed:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network, _parser = _parse(trt, builder, logger, Path(onnx_path), flags)
    config = builder.create_builder_config()
    if workspace_bytes > 0:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if profile:
        _add_profile(builder, config, profile)
    set_flags = []
    if tf32:
        set_flags.append("TF32")
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    if major < 11 and not strongly_typed:  # TRT-10-only precision flags: the weak-typing fallback
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
            set_flags.append("FP16")
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            set_flags.append("INT8")
    _load_cache(config, cache_bytes, cache_path)
    plan = builder.build_serialized_network(network, config)
    typing = "strong" if (strongly_typed or major >= 11) else "weak+flags"
    return plan, config, {"typing": typing, "flags": set_flags}


def build_engine(onnx_path: Union[str, Path], engine_path: Union[str, Path], precision: str,
                 profile: Optional[Dict[str, Sequence[Shape]]], workspace_bytes: int = 1 << 30,
                 timing_cache: Optional[Union[str, Path]] = None, tf32: bool = False,
                 env: Optional[Dict[str, str]] = None, trt: Any = None, device: int = 0) -> Dict[str, Any]:
    """Build and atomically write a serialized engine; return its build info for the manifest.

    Args:
        onnx_path: the (fp32, fp16 or symmetric-QDQ int8) ONNX model.
        engine_path: output plan file.
        precision: ``fp32`` | ``fp16`` | ``int8`` (builder flags only in the TRT 10 weak-typing fallback).
        profile: ``{input_name: (min, opt, max)}`` shapes for a dynamic batch (:func:`batch_profile`); None = static.
        workspace_bytes: workspace pool limit (0 = TensorRT's default, the device maximum).
        timing_cache: timing cache file, read if present and written back after the build.
        tf32: keep TensorRT's TF32 default (faster fp32 convolutions on Ampere+, looser parity).
        env: this machine's ``{"trt_version", "gpu_name", "compute_capability"}`` (default: read with pycuda).
        trt: the ``tensorrt`` module (default: imported, version-checked).
        device: CUDA device ordinal for ``env``.

    Raises:
        PandError: TensorRT missing or older than 10, parse failure (with the parser's messages), unreadable timing
            cache, build failure.
    """
    trt = trt if trt is not None else require_tensorrt()
    major = check_trt_version(trt.__version__)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = b""
    if cache_path is not None and cache_path.exists():
        try:
            cache_bytes = cache_path.read_bytes()
        except OSError as e:
            raise PandError(f"cannot read the timing cache {cache_path}: {e}; delete it or pass another "
                            f"--timing-cache") from None
    plan, config, how = build_serialized(trt, onnx_path, precision, profile, workspace_bytes, cache_bytes,
                                         cache_path, tf32, strongly_typed=True)
    if plan is None and major < 11:
        log.warning("TensorRT %s: strongly typed build failed; retrying weakly typed with %s", trt.__version__,
                    WEAK_TYPING_FLAGS[precision])
        plan, config, how = build_serialized(trt, onnx_path, precision, profile, workspace_bytes, cache_bytes,
                                             cache_path, tf32, strongly_typed=False)
    if plan is None:
        raise PandError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} (see the TensorRT "
                        f"log above)")
    atomic_write_bytes(engine_path, bytes(plan))
    cache_error = None
    if cache_path is not None:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
        except Exception as e:  # noqa: BLE001 - the engine is fine; say why the next build will be slow
            cache_error = f"{type(e).__name__}: {e}"
            log.warning("could not write the timing cache %s (%s); the engine is fine, the next build will not "
                        "reuse this one's timings", cache_path, cache_error)
    if env is None:
        env = device_info(device)
    info: Dict[str, Any] = dict(env)
    info.update({"precision": precision, "typing": how["typing"], "builder_flags": how["flags"], "tf32": bool(tf32),
                 "workspace_bytes": int(workspace_bytes),
                 "timing_cache": str(cache_path) if cache_path else None,
                 "profile": {k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2])}
                             for k, v in (profile or {}).items()}})
    if cache_error:
        info["timing_cache_error"] = cache_error
    return info
