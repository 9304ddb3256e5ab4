"""``pand-engine BUNDLE``: build a TensorRT engine from a bundle's ONNX model on the machine it runs on (torch-free).

Plans are specific to a GPU and a TensorRT version, so the workflow is: ``pand-export`` on the workstation (ONNX
bundle) -> copy the bundle directory to the device -> ``pand-engine BUNDLE`` there -> ``pand-bench``. It:

1. loads the bundle and checks the ONNX model's sha256; an int8 bundle must be the TensorRT flavour (``--target
   tensorrt``: symmetric Q/DQ without INT32 bias inputs); fp16 / int8 precision comes from the ONNX types;
2. builds with :func:`pand_runtime.trt_build.build_engine` (the same code as ``pand-export --format trt``): the dynamic
   batch profile from the manifest (1 .. ``max_batch``, optimal at ``batch``), TF32 cleared unless ``--tf32``, a timing
   cache read and written back (errors reported);
3. runs the engine on the bundle's ``reference.npz`` images and compares with the PyTorch logits stored there, with
   the bundle's own tolerance (:data:`pand_runtime.trt_build.TF32_TOLERANCE` with ``--tf32``) and the runtime's metrics;
4. writes a new bundle (default ``<BUNDLE>-trt``): the same manifest (classes, preprocessing, hashes, source,
   reference) plus ``model.engine`` with its sha256, TensorRT version, GPU name, compute capability and profile, the
   TensorRT parity result and ``valid``; staged next to the output and moved into place only when complete.

``pand-engine --check`` only reports what the machine has for TensorRT (TensorRT, pycuda, CUDA driver, GPUs, numpy)
and what is missing with the fix (:func:`pand_runtime.trt_env.probe`); exit 0 when ready, 2 otherwise.

Exit status: 0 = a valid engine bundle was written; 1 = written but the engine failed its parity check (``valid:
false``); 2 = bad input or environment (no TensorRT, TensorRT < 10, no GPU, parse/build failure; nothing written).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import click
import numpy as np

from ._lazy import pycuda_driver as cuda
from ._lazy import require_trt
from .backends.base import Backend
from .backends.cuda_context import on_device
from .bundle_result import BundleResult
from .backends.trt_backend import TrtBackend, device_info
from .cli_options import tf32_option, timing_cache_option, workspace_option
from .console import report_parity, setup_logging
from .errors import ArtifactError, PandError
from .io import atomic_write_text, sha256_file
from .manifest import (ENGINE_NAME, MANIFEST_NAME, REFERENCE_NAME, Manifest, ModelFile, bundle_file, check_replaceable,
                       load_bundle)
from .parity import backend_parity
from .preprocess import normalize_u8
from .staging import staged_bundle
from .trt_build import batch_profile, build_engine, default_timing_cache, engine_tolerance
from .trt_env import probe

__all__ = ["EngineResult", "build_engine_bundle", "engine_parity", "main"]

log = logging.getLogger("pand.engine")

EXIT_USAGE = 2


#: What :func:`build_engine_bundle` wrote: the same type as ``pand-export``'s ``ExportResult``.
EngineResult = BundleResult


def engine_parity(backend: Backend, manifest: Manifest, reference: Dict[str, np.ndarray], tolerance: Any,
                  max_batch: int) -> Dict[str, Any]:
    """Run ``backend`` on the reference images and judge its logits against the stored PyTorch logits
    (:func:`pand_runtime.parity.backend_parity`, the exporter's routine too)."""
    x = normalize_u8(reference["images_u8"], manifest.preprocess)
    labels = reference.get("labels")
    return backend_parity(backend, x, reference["logits"], labels if labels is not None and len(labels) else None,
                          tolerance, max_batch, manifest.num_classes)[1]


def _on_device(device: int, fn: Any) -> Any:
    """``fn()`` with CUDA device ``device``'s primary context current (TensorRT builds on the current context); this
    thread's context stack is left as it was found (:func:`pand_runtime.backends.cuda_context.on_device`)."""
    with on_device(cuda, device):
        return fn()


def _check_buildable(manifest: Manifest, bundle: Path) -> None:
    if manifest.model("onnx") is None:
        raise ArtifactError(f"bundle {bundle} has no ONNX model to build an engine from; export one with "
                            f"pand-export --format onnx")
    if manifest.precision == "int8" and manifest.int8_target != "tensorrt":
        raise ArtifactError(
            f"bundle {bundle} is an int8 bundle for the ONNX Runtime CPU provider (--target "
            f"{manifest.int8_target or 'cpu'}: asymmetric uint8 activations), which TensorRT rejects (zero points must "
            f"be 0). Export the TensorRT flavour: pand-export RUN --precision int8 --target tensorrt")


def build_engine_bundle(bundle: Union[str, Path], output: Optional[Union[str, Path]] = None, tf32: bool = False,
                        workspace_gb: float = 1.0, timing_cache: Optional[Union[str, Path]] = None,
                        batch: Optional[int] = None, max_batch: Optional[int] = None, device: int = 0,
                        allow_invalid: bool = False) -> EngineResult:
    """Build, check and write an engine bundle from an ONNX bundle (see the module docstring).

    Args:
        bundle: the ONNX bundle written by ``pand-export``.
        output: the engine bundle directory (default ``<bundle>-trt``; an older pand bundle there is replaced).
        tf32: keep TF32 for an fp32 engine (looser parity gate, recorded in the manifest).
        workspace_gb: TensorRT workspace pool limit in GiB (0 = TensorRT's default).
        timing_cache: timing cache file (default ``<output parent>/.pand-trt/timing-<gpu>-sm<cc>-trt<v>.cache``).
        batch / max_batch: override the manifest's optimal / largest batch of the profile.
        device: CUDA device ordinal.
        allow_invalid: build from a bundle whose export parity failed.

    Raises:
        PandError: TensorRT/pycuda/GPU missing (naming what to install), TensorRT < 10, unusable bundle, parse or
            build failure. Nothing is written then.
    """
    bundle = Path(bundle)
    manifest = load_bundle(bundle, allow_invalid=allow_invalid, verify=True, formats=["onnx"])
    _check_buildable(manifest, bundle)
    out = Path(output) if output else bundle.with_name(bundle.name + "-trt")
    if out.resolve() == bundle.resolve():
        raise PandError(f"--output {out} is the source bundle; write the engine bundle elsewhere")
    check_replaceable(out)
    require_trt()  # TensorRT >= 10 and pycuda, or a message naming what to install
    try:
        env = device_info(device)
    except PandError:
        raise
    except Exception as e:  # noqa: BLE001 - pycuda's LogicError/RuntimeError without a driver or device
        raise PandError(f"no usable CUDA GPU for TensorRT ({type(e).__name__}: {e})") from None
    onnx_mf = manifest.model("onnx")
    onnx_path = bundle_file(bundle, onnx_mf.file, "model file")
    ref_name = manifest.reference or REFERENCE_NAME
    ref_path = bundle_file(bundle, ref_name, "reference")
    if not ref_path.is_file():
        raise ArtifactError(f"bundle {bundle} has no {ref_name}: the engine's parity cannot be checked. Re-export the "
                            f"bundle with pand-export")
    with np.load(ref_path, allow_pickle=False) as z:
        reference = {k: z[k] for k in z.files}
    mb = int(max_batch or manifest.max_batch or 32)
    b = int(batch or manifest.batch or 1)
    s = manifest.preprocess.image_size
    profile = batch_profile(manifest.input.name, (3, s, s), b, mb) if manifest.dynamic_batch else None
    cache = Path(timing_cache) if timing_cache else default_timing_cache(out.parent / ".pand-trt", env)
    recorded = (manifest.parity.get("onnxruntime") or {}).get("tolerance")
    tolerance = engine_tolerance(manifest.precision, tf32, recorded)

    with staged_bundle(out, "the engine bundle", "Nothing was written") as staging:
        shutil.copy2(onnx_path, staging / onnx_path.name)
        shutil.copy2(ref_path, staging / ref_name)
        engine = staging / ENGINE_NAME
        log.info("TensorRT %s on %s (sm %s): building %s engine from %s", env["trt_version"], env["gpu_name"],
                 env["compute_capability"], manifest.precision, onnx_path)
        info = _on_device(device, lambda: build_engine(staging / onnx_path.name, engine, manifest.precision, profile,
                                                       int(workspace_gb * (1 << 30)), cache, tf32=tf32, env=env,
                                                       device=device))
        backend = TrtBackend(engine, expected=info, device=device)
        try:
            parity = engine_parity(backend, manifest, reference, tolerance, mb if profile else manifest.batch)
        finally:
            backend.close()
        log.info("tensorrt parity on %d reference images: max|diff| %.3g, mean|diff| %.3g, top-1 agreement %.2f%% "
                 "-> %s", parity["n"], parity["max_abs"], parity["mean_abs"], 100 * parity["top1_agreement"],
                 "PASS" if parity["passed"] else "FAIL: " + "; ".join(parity["failures"]))
        engine_mf = ModelFile(file=ENGINE_NAME, format="tensorrt", sha256=sha256_file(engine),
                              size_bytes=engine.stat().st_size, info=info)
        old_failures = [f for f in manifest.parity.get("failures", []) if not str(f).startswith("tensorrt:")]
        failures = old_failures + [f"tensorrt: {f}" for f in parity["failures"]]
        new_parity = {**{k: v for k, v in manifest.parity.items() if k != "failures"}, "tensorrt": parity,
                      "failures": failures}
        models = [dataclasses.replace(onnx_mf), engine_mf]
        new = dataclasses.replace(
            manifest, models=models, parity=new_parity, valid=not failures,
            max_batch=mb if profile else manifest.max_batch, batch=b if profile else manifest.batch,
            versions={**manifest.versions, "tensorrt": env["trt_version"]},
            export_args={**manifest.export_args,
                         "engine": {"tool": "pand-engine", "source_bundle": str(bundle), "tf32": tf32,
                                    "workspace_gb": workspace_gb, "device": device,
                                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}})

        atomic_write_text(staging / MANIFEST_NAME, new.to_json())
    return EngineResult(bundle=out, manifest=new, valid=new.valid, failures=failures)


def _setup_logging() -> None:
    setup_logging("pand.engine")


def _cli():
    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("bundle", type=click.Path(exists=True, file_okay=False), required=False)
    @click.option("--check", is_flag=True,
                  help="Only report what this machine has for TensorRT (TensorRT, pycuda, CUDA driver, GPUs, numpy) "
                       "and what is missing, with the fix; exit 0 when ready, 2 otherwise. No BUNDLE needed.")
    @click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
                  help="Engine bundle directory (default <BUNDLE>-trt).")
    @tf32_option("fp32: keep TensorRT's TF32 convolutions (faster on Ampere+/Orin; parity gate max |diff| 1e-2 "
                 "instead of 1e-3, recorded in the manifest).")
    @workspace_option()
    @timing_cache_option("next to the output, per GPU and version")
    @click.option("--batch", type=click.IntRange(min=1), default=None,
                  help="Optimal batch of the profile (default: the manifest's batch).")
    @click.option("--max-batch", type=click.IntRange(min=1), default=None,
                  help="Largest batch of the profile (default: the manifest's max_batch).")
    @click.option("--device", type=click.IntRange(min=0), default=0, show_default=True, help="CUDA device.")
    @click.option("--allow-invalid", is_flag=True, help="Build from a bundle whose export parity check failed.")
    def cli(bundle, check, output, tf32, workspace_gb, timing_cache, batch, max_batch, device, allow_invalid):
        """Build a TensorRT engine for THIS GPU from BUNDLE's ONNX model, check it against the bundle's PyTorch
        reference logits and write an engine bundle.

        \b
        Examples:
          pand-engine --check                        # what this device has and lacks for TensorRT
          pand-engine pand_fp32                      # -> pand_fp32-trt/
          pand-engine pand_int8 -o pand_int8-orin --max-batch 8
        """
        _setup_logging()
        if check:
            env = probe(device)
            for line in env.lines():
                click.echo(line)
            sys.exit(0 if env.ok else EXIT_USAGE)
        if bundle is None:
            click.echo("pand-engine: error: missing BUNDLE (or pass --check); see pand-engine --help", err=True)
            sys.exit(EXIT_USAGE)
        try:
            res = build_engine_bundle(bundle, output, tf32=tf32, workspace_gb=workspace_gb,
                                      timing_cache=timing_cache, batch=batch, max_batch=max_batch, device=device,
                                      allow_invalid=allow_invalid)
        except PandError as e:
            click.echo(f"pand-engine: error: {e}", err=True)
            sys.exit(EXIT_USAGE)
        eng = res.manifest.model("tensorrt")
        click.echo(f"\nEngine bundle: {res.bundle}")
        click.echo(f"  {eng.file}: {eng.size_bytes / 1e6:.1f} MB, TensorRT {eng.info.get('trt_version')}, "
                   f"{eng.info.get('gpu_name')} (sm {eng.info.get('compute_capability')}), {res.manifest.precision}"
                   f"{', TF32' if eng.info.get('tf32') else ''}")
        click.echo(f"  Benchmark: pand-bench {res.bundle} --batch 1 --batch {res.manifest.max_batch}")
        report_parity("pand-engine", "the engine", res.valid, res.failures)

    return cli


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point ``pand-engine``."""
    _cli().main(args=list(argv) if argv is not None else None, prog_name="pand-engine")


if __name__ == "__main__":
    main()
