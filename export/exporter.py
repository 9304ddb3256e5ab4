"""The exporter: a format table (:data:`EXPORT_FORMATS`, one frozen :class:`ExportFormat` per ``--format`` value), one
function per format, and the bundle it writes.

======  ============  ========  =========================================  ==================================
format  file          needs     precisions / int8 targets                  what
======  ============  ========  =========================================  ==================================
onnx    model.onnx    CPU       fp32 fp16 int8 / cpu tensorrt             torch -> ONNX (opset <= 18, real
                                                                           dynamic batch), checker, optional
                                                                           onnxslim, fp16 (fp32 I/O) or int8
                                                                           QDQ; parity with ONNX Runtime CPU
trt     model.engine  CUDA+TRT  fp32 fp16 int8 / tensorrt                 a TensorRT plan built from
                                                                           model.onnx on this GPU; parity with
                                                                           TensorRT
======  ============  ========  =========================================  ==================================

The table is what the code reads: the runtime backend that runs each format (which decides the file it writes and its
manifest format, through the runtime's :data:`pand_runtime.model_kinds.MODEL_KINDS`, the table the predictor loads
with), the precisions and int8 targets it accepts (the CLI and :func:`validate_options` check options against it), the
options only it takes (refused, by name, for another ``--format``) and the formats it is built from. ``--format all``
runs every row. A TensorRT bundle keeps its source ``model.onnx`` (engines must be rebuilt on each GPU/TensorRT version;
the ONNX is what they are rebuilt from). The bundle directory is staged next to its final place and moved there only
when complete, so an interrupted export never leaves a half-written bundle; a bundle whose parity check fails is still
written (to inspect it) but marked ``valid: false``.

Example:
    >>> from pand_export import ExportOptions, export_bundle
    >>> result = export_bundle("runs/tiny", ExportOptions(format="onnx", precision="int8", target="cpu"))
    >>> result.valid, result.bundle
    (True, PosixPath('runs/tiny/export/onnx-int8-cpu'))
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata as md
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

import pand
from pand.data.transforms import create_transform
from pand.errors import PandError
from pand.utils.io import atomic_path, atomic_write_text, sha256_file
from pand_runtime.backends.base import Backend
from pand_runtime.backends.ort_backend import OrtBackend
from pand_runtime.backends.trt_backend import TrtBackend
from pand_runtime.bundle_result import BundleResult
from pand_runtime.int8_check import validated_cpu
from pand_runtime.manifest import (FORMAT_VERSION, MANIFEST_NAME, REFERENCE_NAME, Manifest, ModelFile,
                                   check_replaceable)
from pand_runtime.metrics import TOLERANCES, Tolerance
from pand_runtime.model_kinds import kind_of_backend
from pand_runtime.parity import backend_parity
from pand_runtime.preprocess import crop_image, normalize_u8
from pand_runtime.staging import staged_bundle
from pand_runtime.trt_build import batch_profile, build_engine, default_timing_cache, engine_tolerance

from .data import RandomImages, SplitImages, iter_batches, load_folder_images, load_split_images
from .int8_search import accuracy_aware_int8
from .onnx_export import (check_onnx, convert_fp16, onnx_io_specs, onnx_opset, set_onnx_metadata, simplify_onnx,
                          torch_to_onnx)
from .quantize import INT8_TARGETS, Int8Quantizer
from .source import ExportSource, load_source
from .trt import require_trt_build

__all__ = [
    "ExportFormat", "EXPORT_FORMATS", "FORMAT_CHOICES", "PRECISIONS", "ExportOptions", "ExportResult", "export_bundle",
    "export_onnx", "export_trt", "get_format", "formats_of", "check_format_options", "validate_options",
    "default_output_dir",
]

log = logging.getLogger("pand.export")

PRECISIONS = ("fp32", "fp16", "int8")
MAX_OPSET = 18  # ORT CUDA lacks Resize-19/ReduceMax-20 kernels and ORT static quantization rejects opset >= 21
PREPROCESS_ATOL = 1e-5  # runtime numpy preprocessing vs the torch eval transform (exact in practice: 0.0)


@dataclass
class ExportOptions:
    """Everything ``pand-export`` can be told (see ``pand-export --help`` for each option)."""

    format: str = "onnx"  # onnx | trt | all
    precision: str = "fp32"  # fp32 | fp16 | int8
    batch: int = 1  # static batch size, or the TensorRT profile's opt batch when dynamic
    dynamic_batch: bool = True
    max_batch: int = 32  # largest batch the runtime sends (TensorRT profile max)
    opset: int = 18
    # int8 calibration: a number of images from the TRAINING split (bench/int8.py: minmax agreement rises to 256, flat
    # after), or a folder whose images are used instead (all of them)
    calib_images: Union[int, Path] = 256
    data_root: Optional[Path] = None  # where the run's dataset is now (replaces data.root of its config.yaml)
    calib_method: str = "minmax"
    quantize_head: bool = False  # int8: also quantize the final classifier layer
    parity_images: int = 256  # from the TEST split; 0 = all
    output: Optional[Path] = None
    simplify: bool = False
    target: Optional[str] = None  # int8 flavour: cpu | tensorrt (default: tensorrt when building an engine)
    exporter: str = "torchscript"  # torchscript (dynamo=False) | dynamo
    workspace_gb: float = 1.0
    timing_cache: Optional[Path] = None
    tf32: bool = False  # fp32 TensorRT engine: keep TF32 convolutions (faster on Ampere+, looser parity gate)
    seed: int = 0
    min_agreement: Optional[float] = None  # override the precision's default tolerance
    max_acc_drop: Optional[float] = None
    threads: int = 0  # ORT intra-op threads for the parity run
    reduce_range: Optional[bool] = None  # int8: 7-bit weights (None = auto: on for cpu where int8 kernels saturate)
    accuracy_aware: bool = True  # int8: keep the most sensitive layers in float until the parity target is met
    max_float_units: Optional[int] = None  # int8: the most fallback units the search may keep in float


@dataclass
class ExportContext:
    """State shared by the per-format functions of one export."""

    source: ExportSource
    opts: ExportOptions
    staging: Path
    tolerance: Tolerance
    ref_inputs: np.ndarray  # float32 [N, 3, S, S], what the torch student saw
    ref_logits: np.ndarray  # float32 [N, C]
    labels: Optional[np.ndarray]  # int64 [N]; None when the parity inputs are random images (no dataset)
    parity_what: str = "test images"  # what the parity inputs are, for messages
    trt_env: Optional[Dict[str, str]] = None
    onnx_path: Optional[Path] = None
    models: List[ModelFile] = field(default_factory=list)
    parity: Dict[str, Any] = field(default_factory=dict)
    onnx_info: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table: what ``--format NAME`` writes and accepts.

    Attributes:
        name: the ``--format`` value.
        backend: the runtime backend that runs it (``onnxruntime`` | ``tensorrt``); it decides :attr:`file` and
            :attr:`model_format` through the runtime's one backend -> model table
            (:data:`pand_runtime.model_kinds.MODEL_KINDS`), the table the predictor loads bundles with.
        precisions: the ``--precision`` values it accepts.
        int8_targets: the ``--target`` flavours it accepts with int8, the default first.
        built_from: formats exported before it in the same bundle (TensorRT is built from the bundle's ONNX).
        needs_gpu: it needs TensorRT + pycuda + a CUDA GPU on the export machine.
        description: one line for ``--help``.
        fn: the export step, ``ExportContext -> ModelFile``.
        options: the :class:`ExportOptions` fields only this format reads (``pand-export`` refuses them, by name,
            for a ``--format`` that neither is nor is built from this row: :func:`check_format_options`).
    """

    name: str
    backend: str
    precisions: Tuple[str, ...]
    int8_targets: Tuple[str, ...]
    built_from: Tuple[str, ...]
    needs_gpu: bool
    description: str
    fn: Callable[[ExportContext], ModelFile]
    options: Tuple[str, ...] = ()

    @property
    def file(self) -> str:
        """The model file it writes inside the bundle: its backend's (:func:`.model_kinds.kind_of_backend`)."""
        return kind_of_backend(self.backend).file

    @property
    def model_format(self) -> str:
        """The manifest's ``models[].format`` of that file (``onnx`` | ``tensorrt``), its backend's."""
        return kind_of_backend(self.backend).format


#: What :func:`export_bundle` produced: the same type as ``pand-engine``'s ``EngineResult``.
ExportResult = BundleResult


def export_step(prefix: str) -> Callable:
    """Log ``PREFIX: starting``, then ``PREFIX: export success 3.4s, saved as 'file' (11.7 MB)`` or the failure."""

    def deco(fn: Callable[[ExportContext], ModelFile]) -> Callable[[ExportContext], ModelFile]:
        @functools.wraps(fn)
        def wrapper(ctx: ExportContext) -> ModelFile:
            log.info("%s: starting export (%s)", prefix, ctx.opts.precision)
            t0 = time.perf_counter()
            try:
                mf = fn(ctx)
            except Exception as e:
                log.error("%s: export failure after %.1fs: %s", prefix, time.perf_counter() - t0, e)
                raise
            log.info("%s: export success %.1fs, saved as '%s' (%.1f MB)", prefix, time.perf_counter() - t0, mf.file,
                     mf.size_bytes / 1e6)
            return mf

        return wrapper

    return deco


def _model_file(ctx: ExportContext, path: Path, fmt: str, info: Dict[str, Any]) -> ModelFile:
    return ModelFile(file=path.name, format=fmt, sha256=sha256_file(path), size_bytes=path.stat().st_size, info=info)


def _parity(ctx: ExportContext, backend_name: str, backend: Backend, tolerance: Optional[Tolerance] = None) -> None:
    """Run ``backend`` on the parity inputs (chunks of at most 32), compare with the torch logits, record the result
    under its name (judged by ``tolerance``, default the precision's): :func:`pand_runtime.parity.backend_parity`."""
    res, ctx.parity[backend_name] = backend_parity(backend, ctx.ref_inputs, ctx.ref_logits, ctx.labels,
                                                   tolerance or ctx.tolerance, min(ctx.opts.max_batch, 32))
    fails = ctx.parity[backend_name]["failures"]
    acc = "" if res.acc_out is None else (f"; top-1 on these {res.n} images {res.acc_out:.2%} "
                                          f"(PyTorch {res.acc_ref:.2%})")
    log.info("%s parity on %d %s: agreement with PyTorch %.2f%%, max|diff| %.3g, mean|diff| %.3g, cosine %.6f%s"
             " -> %s", backend_name, res.n, ctx.parity_what, 100 * res.top1_agreement, res.max_abs, res.mean_abs,
             res.mean_cosine, acc, "PASS" if not fails else "FAIL: " + "; ".join(fails))


@export_step("ONNX")
def export_onnx(ctx: ExportContext) -> ModelFile:
    """torch -> fp32 ONNX -> checker -> [onnxslim] -> [fp16 | int8 QDQ] -> checker -> metadata -> ORT parity."""
    o, src = ctx.opts, ctx.source
    final = ctx.staging / get_format("onnx").file
    fp32 = final.with_name(f".{final.stem}.fp32{final.suffix}") if o.precision != "fp32" else final
    torch_to_onnx(src.model, fp32, src.preprocess.image_size, batch=o.batch, dynamic=o.dynamic_batch, opset=o.opset,
                  exporter=o.exporter, max_batch=o.max_batch)
    check_onnx(fp32)
    simplified = simplify_onnx(fp32) if o.simplify else False
    if simplified:
        check_onnx(fp32)
    info: Dict[str, Any] = {"precision": o.precision, "exporter": o.exporter, "simplified": simplified}
    if o.precision == "fp16":
        convert_fp16(fp32, final)
        info["fp16"] = {"converter": "onnxconverter_common.float16", "keep_io_types": True}
    elif o.precision == "int8":
        folder = calib_folder(o)
        calib = (load_folder_images(folder, 0, o.seed) if folder is not None
                 else load_split_images(src.cfg, "train", int(o.calib_images), o.seed, src.class_names))
        transform = create_transform(src.preprocess, is_train=False)
        batches = [x.numpy() for _, x in iter_batches(calib, transform, 8, desc="INT8 calibration")]
        search = None
        with Int8Quantizer(fp32, batches, target=o.target, method=o.calib_method,
                           reduce_range=o.reduce_range) as q:
            base = [] if o.quantize_head else list(q.head_nodes)
            if o.accuracy_aware:
                recipe, search = accuracy_aware_int8(q, final, ctx.ref_inputs, ctx.ref_logits, ctx.labels,
                                                     ctx.tolerance, base, threads=o.threads,
                                                     max_units=o.max_float_units)
            else:
                recipe = q.quantize(final, base)
        info["int8"] = {**dataclasses.asdict(recipe), "calibration_images": len(calib),
                        "calibration_split": "train" if folder is None else f"folder {folder}",
                        "calibration_method": o.calib_method, "validated_cpu": validated_cpu(),
                        "accuracy_aware": search}
    if fp32 != final:
        fp32.unlink()
    check_onnx(final)
    set_onnx_metadata(final, {
        "pand.arch": src.arch, "pand.precision": o.precision, "pand.class_names": json.dumps(src.class_names),
        "pand.preprocess": json.dumps(dataclasses.asdict(src.preprocess)),
    })
    ins, outs = onnx_io_specs(final)
    ctx.onnx_info = {"inputs": ins, "outputs": outs, "opset": onnx_opset(final)}
    ctx.onnx_path = final
    _parity(ctx, "onnxruntime", OrtBackend(final, intra_op_threads=o.threads))
    return _model_file(ctx, final, get_format("onnx").model_format, info)


@export_step("TensorRT")
def export_trt(ctx: ExportContext) -> ModelFile:
    """A serialized engine built from the bundle's model.onnx (exported before it: ``built_from``) on this GPU, then
    TensorRT parity."""
    o, s = ctx.opts, ctx.source.preprocess.image_size
    name = ctx.onnx_info["inputs"][0].name
    profile = batch_profile(name, (3, s, s), o.batch, o.max_batch) if o.dynamic_batch else None
    cache = o.timing_cache or default_timing_cache(
        ctx.source.cfg.cache_dir if ctx.source.cfg is not None else ".cache/pand", ctx.trt_env or {})
    fmt = get_format("trt")
    engine = ctx.staging / fmt.file
    info = build_engine(ctx.onnx_path, engine, o.precision, profile, int(o.workspace_gb * (1 << 30)), cache,
                        tf32=o.tf32, env=ctx.trt_env)
    backend = TrtBackend(engine, expected=info)
    try:
        _parity(ctx, "tensorrt", backend, engine_tolerance(o.precision, o.tf32, ctx.tolerance.to_dict()))
    finally:
        backend.close()
    return _model_file(ctx, engine, fmt.model_format, info)


EXPORT_FORMATS: Tuple[ExportFormat, ...] = (
    ExportFormat(name="onnx", backend="onnxruntime", precisions=PRECISIONS, int8_targets=INT8_TARGETS, built_from=(),
                 needs_gpu=False, description="ONNX model for ONNX Runtime (any device)", fn=export_onnx,
                 options=("opset", "exporter", "simplify")),
    ExportFormat(name="trt", backend="tensorrt", precisions=PRECISIONS, int8_targets=("tensorrt",),
                 built_from=("onnx",), needs_gpu=True,
                 description="TensorRT engine for this GPU + TensorRT version (+ its ONNX)", fn=export_trt,
                 options=("workspace_gb", "timing_cache", "tf32")),
)
FORMAT_CHOICES = tuple(f.name for f in EXPORT_FORMATS) + ("all",)


def get_format(name: str) -> ExportFormat:
    """The table row called ``name``."""
    for f in EXPORT_FORMATS:
        if f.name == name:
            return f
    raise PandError(f"unknown export format '{name}'. Valid: {', '.join(FORMAT_CHOICES)}")


def formats_of(name: str) -> List[ExportFormat]:
    """The table rows ``--format name`` exports, in order: the row and the rows it is built from (``all``: every
    row). A TensorRT bundle thus also ships the ONNX its engine was built from."""
    rows = list(EXPORT_FORMATS) if name == "all" else [get_format(name)]
    out: List[ExportFormat] = []
    for f in rows:
        for dep in (*f.built_from, f.name):
            if all(g.name != dep for g in out):
                out.append(get_format(dep))
    return out


def calib_folder(opts: ExportOptions) -> Optional[Path]:
    """The folder of calibration images when ``calib_images`` names one (a path), else None (a count)."""
    c = opts.calib_images
    return Path(c) if isinstance(c, (str, Path)) and not str(c).isdigit() else None


def check_format_options(format: str, given: Mapping[str, str]) -> None:
    """Refuse an option that ``--format format`` does not take: one that some row of :data:`EXPORT_FORMATS` declares
    (:attr:`ExportFormat.options`) but no row of :func:`formats_of` ``(format)`` does.

    Args:
        format: the ``--format`` value.
        given: the :class:`ExportOptions` fields the user set -> how to name each in the message (the CLI: its flag,
            ``--tf32``; the Python API: ``tf32=``).

    Raises:
        PandError: naming the option, the formats that take it and the fix.
    """
    taken = {o for f in formats_of(format) for o in f.options}
    for name, shown in given.items():
        owners = [f.name for f in EXPORT_FORMATS if name in f.options]
        if owners and name not in taken:
            raise PandError(f"{shown} applies to --format {'/'.join(owners)} only; --format {format} does not take it "
                            f"(it would be ignored). Drop {shown}, or export with --format {owners[0]} (or all)"
                            + (", or pass it to pand-engine when building the engine on the device"
                               if "trt" in owners else ""))


def validate_options(opts: ExportOptions) -> ExportOptions:
    """Check option values and combinations; fill the int8 target default. Raises :class:`PandError`."""
    import onnx

    defaults = ExportOptions()
    check_format_options(opts.format, {f.name: f"{f.name}=" for f in dataclasses.fields(ExportOptions)
                                       if getattr(opts, f.name) != getattr(defaults, f.name)})
    fmts = formats_of(opts.format)
    for f in fmts:
        if opts.precision not in f.precisions:
            raise PandError(f"unknown precision '{opts.precision}' for --format {f.name}. Valid: "
                            f"{', '.join(f.precisions)}")
    targets = [t for t in INT8_TARGETS if all(t in f.int8_targets for f in fmts)]  # valid for every row, default first
    if opts.target is None:
        opts = dataclasses.replace(opts, target=targets[0] if opts.precision == "int8" else None)
    elif opts.precision != "int8":
        raise PandError(f"--target only applies to --precision int8 (got --precision {opts.precision})")
    if opts.target not in (None, *INT8_TARGETS):
        raise PandError(f"unknown --target '{opts.target}'. Valid: {', '.join(INT8_TARGETS)}")
    if opts.target is not None and opts.target not in targets:
        raise PandError(f"--target {opts.target} is not accepted by --format {opts.format} (valid: "
                        f"{', '.join(targets)}): --target cpu makes asymmetric uint8 activations, which TensorRT rejects "
                        f"(zero points must be 0). Use --target tensorrt with --format trt/all")
    if opts.batch < 1 or opts.max_batch < 1:
        raise PandError("--batch and --max-batch must be >= 1")
    if opts.dynamic_batch and opts.batch > opts.max_batch:
        raise PandError(f"--batch {opts.batch} is larger than --max-batch {opts.max_batch}")
    top = onnx.defs.onnx_opset_version()
    if not 13 <= opts.opset <= top:
        raise PandError(f"--opset {opts.opset} is out of range: use 13..{top} (<= {MAX_OPSET} recommended)")
    if opts.opset > MAX_OPSET:
        if opts.precision == "int8" and opts.opset >= 21:
            raise PandError(f"--opset {opts.opset}: ONNX Runtime static quantization rejects opset >= 21; use <= 18")
        log.warning("opset %d > %d: ONNX Runtime CUDA/TensorRT may lack kernels for it", opts.opset, MAX_OPSET)
    folder = calib_folder(opts)
    if folder is not None and not folder.is_dir():
        raise PandError(f"--calib-images {folder}: not a folder (give a number of training images or a folder of "
                        f"calibration images)")
    if opts.precision == "int8" and folder is None and int(opts.calib_images) < 1:
        raise PandError("--calib-images must be >= 1 for int8")
    # the CLI's click types check the same ranges; these hold for the Python API too
    if opts.min_agreement is not None and not 0.0 <= opts.min_agreement <= 1.0:
        raise PandError(f"--min-agreement {opts.min_agreement} is out of range: a top-1 agreement in [0, 1]")
    if opts.max_acc_drop is not None and not 0.0 <= opts.max_acc_drop <= 1.0:
        raise PandError(f"--max-acc-drop {opts.max_acc_drop} is out of range: a fraction in [0, 1]")
    count = opts.calib_images if isinstance(opts.calib_images, int) else 0  # a folder (Path) has no count to check
    if opts.parity_images < 0 or opts.threads < 0 or count < 0:
        raise PandError(f"--parity-images ({opts.parity_images}), --threads ({opts.threads}) and --calib-images "
                        f"({opts.calib_images}) must be >= 0")
    return opts


def default_output_dir(source_path: Path, opts: ExportOptions) -> Path:
    """``<run_dir>/export/<format>-<precision>[-<target>]`` (next to a bare checkpoint: ``<its dir>/export/...``)."""
    base = source_path if source_path.is_dir() else source_path.parent
    name = f"{opts.format}-{opts.precision}" + (f"-{opts.target}" if opts.precision == "int8" else "")
    return base / "export" / name


def _tolerance(opts: ExportOptions) -> Tolerance:
    tol = TOLERANCES[opts.precision]
    if opts.min_agreement is not None:
        tol = dataclasses.replace(tol, min_agreement=opts.min_agreement)
    if opts.max_acc_drop is not None:
        tol = dataclasses.replace(tol, max_acc_drop=opts.max_acc_drop)
    return tol


def _reference(src: ExportSource, images: SplitImages) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Torch inputs + logits on the parity images, their uint8 crops, and the runtime-vs-torch preprocessing max
    |diff| (the runtime's numpy transform applied to the same crops)."""
    import torch

    transform = create_transform(src.preprocess, is_train=False)
    inputs, logits = [], []
    with torch.no_grad():
        for _, x in iter_batches(images, transform, 16, desc="PyTorch reference"):
            inputs.append(x.numpy().astype(np.float32))
            logits.append(src.model(x).numpy().astype(np.float32))
    x = np.concatenate(inputs)
    crops = np.stack([crop_image(images.image(k), src.preprocess) for k in range(len(images))])
    diff = float(np.abs(normalize_u8(crops, src.preprocess) - x).max()) if len(x) else 0.0
    return x, np.concatenate(logits), crops, diff


def _versions(trt_env: Optional[Dict[str, str]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"pand": pand.__version__, "python": platform.python_version()}
    for pkg in ("torch", "torchvision", "onnx", "onnxruntime", "onnxslim", "onnxconverter-common", "numpy", "pillow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    if trt_env:
        out["tensorrt"] = trt_env.get("trt_version")
    return out


def _write_bundle_files(ctx: ExportContext, crops: np.ndarray, images: SplitImages, pre_diff: float,
                        source_path: Path) -> Manifest:
    src, o = ctx.source, ctx.opts
    with atomic_path(ctx.staging / REFERENCE_NAME) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images_u8=crops, labels=ctx.labels if ctx.labels is not None else
                                np.zeros(0, np.int64), logits=ctx.ref_logits,
                                paths=np.asarray(images.paths, dtype=str))
    pre_ok = pre_diff <= PREPROCESS_ATOL
    failures = [f"{name}: {msg}" for name, r in ctx.parity.items() for msg in r["failures"]]
    if not pre_ok:
        failures.insert(0, f"preprocessing: the runtime's numpy transform differs from the training eval transform by "
                           f"{pre_diff:.3g} (> {PREPROCESS_ATOL:g}); the manifest cannot describe this transform")
    labelled = ctx.labels is not None and len(ctx.labels) > 0
    split_images = getattr(getattr(images, "dataset", None), "__len__", None)
    parity = {"split": images.split, "n_images": int(len(ctx.ref_logits)), "seed": o.seed,
              # how many images the split has: n_images < split_images means a seeded subset (--parity-images)
              "split_images": int(split_images()) if split_images else int(len(ctx.ref_logits)),
              "inputs": "dataset images" if labelled else "random images (the run's dataset was not available)",
              "reference_accuracy": float(np.mean(ctx.ref_logits.argmax(1) == ctx.labels)) if labelled else None,
              "preprocess": {"max_abs_diff": pre_diff, "atol": PREPROCESS_ATOL, "passed": pre_ok},
              **ctx.parity, "failures": failures}
    export_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(o).items()}
    manifest = Manifest(
        format_version=FORMAT_VERSION, arch=src.arch, num_classes=src.num_classes, class_names=src.class_names,
        preprocess=src.preprocess, inputs=ctx.onnx_info["inputs"], outputs=ctx.onnx_info["outputs"],
        precision=o.precision, models=ctx.models, valid=not failures, int8_target=o.target,
        opset=ctx.onnx_info["opset"], dynamic_batch=o.dynamic_batch, batch=o.batch,
        max_batch=o.max_batch if o.dynamic_batch else o.batch,
        source={"path": str(source_path), "checkpoint": str(src.checkpoint), "sha256": src.checkpoint_sha256,
                "run_dir": str(src.run_dir) if src.run_dir else None,
                "dataset": str(src.cfg.data.name) if src.cfg is not None else None},
        versions=_versions(ctx.trt_env), parity=parity, reference=REFERENCE_NAME,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), export_args=export_args,
    )
    atomic_write_text(ctx.staging / MANIFEST_NAME, manifest.to_json())
    return manifest


RANDOM_PARITY_IMAGES = 32  # parity inputs of an fp32/fp16 export without the dataset


def _parity_images(src: ExportSource, opts: ExportOptions) -> Tuple[Any, str]:
    """The parity images and what they are, for messages: a seeded subset of the run's test split (all of it with
    ``--parity-images 0``); for fp32/fp16 without the dataset, seeded random images (said so; no labels, so the
    bundle has agreement but no accuracy). INT8 needs the dataset (its accuracy-aware search is judged on it)."""
    try:
        images = load_split_images(src.cfg, "test", opts.parity_images, opts.seed, src.class_names)
    except PandError as e:
        if opts.precision == "int8":
            raise PandError(f"{e}. INT8 export needs the run's test images for its parity check: pass --data-root DIR "
                            f"where the dataset is now") from None
        n = RANDOM_PARITY_IMAGES if opts.parity_images <= 0 else min(opts.parity_images, RANDOM_PARITY_IMAGES)
        log.warning("the run's dataset is not available (%s); %s parity is checked on %d random images instead (no "
                    "labels: agreement with PyTorch but no accuracy). Pass --data-root DIR for parity on the test "
                    "split", e, opts.precision, n)
        return RandomImages(n, src.preprocess.image_size, opts.seed), "random images"
    total = len(images.dataset)
    what = (f"parity images (a seeded subset of the {total} test images; --parity-images 0 for all)"
            if len(images) < total else "test images (the whole test split)")
    log.info("parity set: %d %s; reference: PyTorch %s on CPU", len(images), what, src.arch)
    return images, what


def export_bundle(source_path: str | Path, opts: ExportOptions) -> ExportResult:
    """Export the student of a run directory / checkpoint to a bundle directory (see the module docstring).

    Args:
        source_path: run directory or ``student.safetensors`` checkpoint.
        opts: the export options.

    Returns:
        :class:`ExportResult`; ``valid`` is False when a parity check failed (the bundle is still written).

    Raises:
        PandError: bad options, missing TensorRT/GPU for ``trt`` (before anything is written), unreadable source.
    """
    opts = validate_options(opts)
    fmts = formats_of(opts.format)
    trt_env = None
    if any(f.needs_gpu for f in fmts):
        trt_env = require_trt_build()
    source_path = Path(source_path)
    src = load_source(source_path, data_root=opts.data_root)
    bundle = Path(opts.output) if opts.output else default_output_dir(source_path, opts)
    check_replaceable(bundle)
    images, what = _parity_images(src, opts)
    ref_inputs, ref_logits, crops, pre_diff = _reference(src, images)
    if not np.isfinite(ref_logits).all():
        raise PandError(f"the PyTorch student of {src.checkpoint} returns NaN or inf logits on the parity images; "
                        f"nothing was written. Retrain (or resume from an earlier checkpoint) before exporting")
    with staged_bundle(bundle, "the bundle", "Nothing was written (the staging directory was removed); free disk "
                                             "space or choose a writable --output") as staging:
        labels = images.labels if len(images.labels) else None
        ctx = ExportContext(source=src, opts=opts, staging=staging, tolerance=_tolerance(opts), ref_inputs=ref_inputs,
                            ref_logits=ref_logits, labels=labels, trt_env=trt_env, parity_what=what)
        for f in fmts:
            ctx.models.append(f.fn(ctx))
        manifest = _write_bundle_files(ctx, crops, images, pre_diff, source_path)
    failures = list(manifest.parity["failures"])
    return ExportResult(bundle=bundle, manifest=manifest, valid=manifest.valid, failures=failures)
