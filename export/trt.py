"""ONNX -> serialized TensorRT engine with the Python API common to TensorRT 10.x and 11.x (DEPLOY.md 2, 6, 7).

Build recipe:

* ``builder.create_network(flags)``: explicit batch is the only mode since 10.0 (no ``EXPLICIT_BATCH`` flag).
  TensorRT 11 is always strongly typed; on 10.x the network is created ``STRONGLY_TYPED`` too, so the FP16 and Q/DQ
  INT8 types of the ONNX decide the precision and no precision flag is needed ("Use explicit quantization with
  Strong Typing ... build flags should not be specified"). Only if a 10.x build fails that way is it retried weakly
  typed with the TRT-10-only ``BuilderFlag.FP16`` / ``INT8`` flags (the fallback; those flags are gone in 11).
* ``OnnxParser.parse_from_file`` with every parser error reported.
* one optimisation profile min/opt/max over the batch axis, ``set_memory_pool_limit(WORKSPACE, ...)``.
* a timing cache loaded from and saved back to a file, so rebuilds on the same GPU are fast.
* ``build_serialized_network`` (``build_engine`` is gone since 10.0).

Not verified here: this machine has no CUDA GPU and TensorRT cannot be installed; the tests that build an engine skip
with that reason. :func:`require_trt_build` runs before any file is written, so ``--format trt`` without TensorRT or a
GPU fails cleanly.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from pand.errors import PandError
from pand.utils.io import atomic_write_bytes

__all__ = ["require_trt_build", "trt_environment", "build_engine", "default_timing_cache"]

log = logging.getLogger("pand.export")

Shape = Tuple[int, ...]


def require_trt_build(device: int = 0) -> Dict[str, str]:
    """Check that an engine can be built here: TensorRT importable and a CUDA GPU visible.

    Returns:
        :func:`trt_environment` of ``device``.

    Raises:
        PandError: naming what is missing and how to get it.
    """
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        raise PandError(
            "--format trt needs TensorRT (pip install 'pand[trt]', or the JetPack TensorRT on Jetson) and a CUDA GPU; "
            f"TensorRT cannot be imported here ({e}). Export --format onnx instead, copy the bundle to the target and "
            "build the engine there") from e
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() <= device:
        raise PandError("--format trt needs a CUDA GPU to build the engine on (plans are specific to the GPU and "
                        "TensorRT version); none is visible here. Build on the target device, or export --format onnx")
    return trt_environment(device)


def trt_environment(device: int = 0) -> Dict[str, str]:
    """``{"trt_version", "gpu_name", "compute_capability"}`` of the build machine (the engine only runs there)."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return {"trt_version": trt.__version__, "gpu_name": torch.cuda.get_device_name(device),
            "compute_capability": f"{major}.{minor}"}


def default_timing_cache(cache_dir: Union[str, Path], env: Dict[str, str]) -> Path:
    """``<cache_dir>/trt/timing-<gpu>-sm<cc>-trt<version>.cache``: one reusable timing cache per GPU and version."""
    gpu = "".join(c if c.isalnum() else "-" for c in env["gpu_name"]).strip("-")
    return Path(cache_dir) / "trt" / f"timing-{gpu}-sm{env['compute_capability']}-trt{env['trt_version']}.cache"


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path, flags: int) -> Any:
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PandError(f"TensorRT cannot parse {onnx_path}: {errors}")
    return network, parser


def _build(trt: Any, logger: Any, onnx_path: Path, profile_shapes: Dict[str, Sequence[Shape]], workspace: int,
           cache_bytes: bytes, strongly_typed: bool, precision: str) -> Tuple[Optional[Any], Any]:
    builder = trt.Builder(logger)
    flags = 0
    major = int(trt.__version__.split(".")[0])
    if major < 11 and strongly_typed:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network, _parser = _parse(trt, builder, logger, onnx_path, flags)
    config = builder.create_builder_config()
    if workspace > 0:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if profile_shapes:
        profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in profile_shapes.items():
            profile.set_shape(name, tuple(mn), tuple(opt), tuple(mx))
        config.add_optimization_profile(profile)
    if major < 11 and not strongly_typed:  # TRT-10-only precision flags: the fallback path
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    return plan, config


def build_engine(onnx_path: Union[str, Path], engine_path: Union[str, Path], precision: str,
                 profile: Optional[Dict[str, Sequence[Shape]]], workspace_bytes: int = 1 << 30,
                 timing_cache: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Build and atomically write a serialized engine.

    Args:
        onnx_path: the (fp32, fp16 or symmetric-QDQ int8) ONNX model.
        engine_path: output plan file.
        precision: ``fp32`` | ``fp16`` | ``int8`` (only used by the TRT 10 weak-typing fallback).
        profile: ``{input_name: (min, opt, max)}`` shapes for a dynamic batch; None for a static model.
        workspace_bytes: workspace pool limit (0 = TensorRT's default, the device maximum).
        timing_cache: timing cache file, read if present and written back after the build.

    Returns:
        Build info for the manifest: TRT version, GPU, compute capability, profile, workspace, typing mode.

    Raises:
        PandError: parse or build failure.
    """
    import tensorrt as trt

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    major = int(trt.__version__.split(".")[0])
    plan, config = _build(trt, logger, onnx_path, profile or {}, workspace_bytes, cache_bytes, True, precision)
    typing = "strong"
    if plan is None and major < 11:
        log.warning("TensorRT %s: strongly typed build failed; retrying weakly typed with the %s builder flag",
                    trt.__version__, precision.upper())
        plan, config = _build(trt, logger, onnx_path, profile or {}, workspace_bytes, cache_bytes, False, precision)
        typing = "weak+flags"
    if plan is None:
        raise PandError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    atomic_write_bytes(engine_path, bytes(plan))
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    import torch

    info: Dict[str, Any] = trt_environment(torch.cuda.current_device())
    info.update({"typing": typing, "workspace_bytes": int(workspace_bytes),
                 "timing_cache": str(cache_path) if cache_path else None,
                 "profile": {k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2])}
                             for k, v in (profile or {}).items()}})
    return info
