"""The bundle format: ``manifest.json`` + model file(s) + ``reference.npz``, and the checks run before loading one.

A bundle is a directory written by ``pand-export``::

    bundle/
      manifest.json     # everything below, format_version 1
      model.onnx        # the ONNX model (fp32, fp16 with fp32 I/O, or int8 QDQ)
      model.engine      # optional: a serialized TensorRT plan built from model.onnx on the target GPU
      reference.npz     # parity data: images_u8 [N,S,S,3] uint8 (after resize + center crop), labels [N] int64,
                        # logits [N,C] float32 (the PyTorch student on exactly these images)

The manifest is self-describing: class names, the eval transform (resize shorter side to ``resize_size`` with
``interpolation``, center crop ``image_size``, RGB, /255, ``(x - mean) / std``, NCHW float32), the model's input and
output names and shapes, precision, opset, sha256 of the source checkpoint and of every model file, library versions,
the parity results and ``valid``. :func:`load_bundle` refuses a bundle from a newer format version, a missing or
tampered model file (sha256) and, unless asked, a bundle whose parity check failed.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import ArtifactError
from .io import sha256_file
from .json_fields import as_dict, bad_type, get_int, get_list, get_str, require
from .preprocess_spec import PreprocessSpec

__all__ = [
    "FORMAT_VERSION", "MAX_MANIFEST_BYTES", "MAX_MANIFEST_DEPTH", "MANIFEST_NAME", "REFERENCE_NAME", "ONNX_NAME", "ENGINE_NAME", "TensorSpec", "ModelFile", "Manifest",
    "load_manifest", "load_bundle", "verify_model_files", "check_file_name", "bundle_file",
    "check_replaceable", "publish_bundle", "BENCH_DIR",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
REFERENCE_NAME = "reference.npz"
ONNX_NAME = "model.onnx"  # the ONNX model of every bundle
ENGINE_NAME = "model.engine"  # a TensorRT plan built from ONNX_NAME (pand-export --format trt, or pand-engine)

#: a manifest is a few KB; a larger file is refused before it is parsed (never read whole)
MAX_MANIFEST_BYTES = 1 << 20
#: the deepest nesting a manifest may have (pand writes about 6 levels)
MAX_MANIFEST_DEPTH = 32

Dim = Union[int, str]  # a fixed size or a symbolic name ("batch")


def check_file_name(name: Any, what: str) -> str:
    """``name`` if it is a plain file name (no directory part, not ``.``/``..``, not absolute), else ArtifactError.

    Bundle files are always siblings of ``manifest.json``; a manifest that points elsewhere (``../x``, ``/abs``,
    ``sub/x``) is refused so that a bundle can only ever load files from its own directory.
    """
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or Path(name).is_absolute() or Path(name).name != name):
        raise ArtifactError(f"{what} {name!r} is not a plain file name inside the bundle directory; bundle files "
                            f"must sit next to manifest.json. Re-export the bundle with pand-export")
    return name


def bundle_file(bundle: Union[str, Path], name: Any, what: str = "bundle file") -> Path:
    """The path of the bundle file ``name``: a plain file name (see :func:`check_file_name`) that is not a symlink
    and resolves to a path directly inside ``bundle``. Does not check that the file exists."""
    bundle = Path(bundle)
    path = bundle / check_file_name(name, f"{bundle / MANIFEST_NAME}: {what}")
    if path.is_symlink():
        raise ArtifactError(f"bundle {bundle}: {name} is a symbolic link; bundle files must be regular files inside "
                            f"the bundle directory. Copy the real file in its place or re-export the bundle")
    if path.exists() and path.resolve().parent != bundle.resolve():
        raise ArtifactError(f"bundle {bundle}: {name} resolves to {path.resolve()}, outside the bundle directory. "
                            f"Re-export the bundle with pand-export")
    return path


@dataclass
class TensorSpec:
    """Name, shape (ints or a symbolic name such as ``"batch"``) and numpy dtype name of a model input/output."""

    name: str
    shape: List[Dim]
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TensorSpec":
        what = "manifest tensor spec"
        require(as_dict(d, what), ("name", "shape"), what)
        return cls(name=get_str(d, "name", what), shape=list(get_list(d, "shape", what, (int, str), "a list of sizes")),
                   dtype=str(d.get("dtype", "float32")))


@dataclass
class ModelFile:
    """One model file of the bundle. ``format`` is ``onnx`` or ``tensorrt``; ``info`` holds format extras
    (TensorRT: ``trt_version``, ``gpu_name``, ``compute_capability``, ``profile`` {min, opt, max} shapes)."""

    file: str
    format: str
    sha256: str
    size_bytes: int = 0
    info: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelFile":
        what = "manifest 'models' entry"
        require(as_dict(d, what), ("file", "format", "sha256"), what)
        return cls(file=check_file_name(get_str(d, "file", what), f"{what}: file"), format=get_str(d, "format", what),
                   sha256=get_str(d, "sha256", what),
                   size_bytes=get_int(d, "size_bytes", what) if "size_bytes" in d else 0,
                   info=dict(as_dict(d.get("info") or {}, f"{what}: info")))


@dataclass
class Manifest:
    """Parsed ``manifest.json`` (see the module docstring for the meaning of each field)."""

    format_version: int
    arch: str
    num_classes: int
    class_names: List[str]
    preprocess: PreprocessSpec
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    precision: str
    models: List[ModelFile]
    valid: bool
    int8_target: Optional[str] = None
    opset: Optional[int] = None
    dynamic_batch: bool = True
    batch: int = 1
    max_batch: int = 32
    source: Dict[str, Any] = field(default_factory=dict)
    versions: Dict[str, Any] = field(default_factory=dict)
    parity: Dict[str, Any] = field(default_factory=dict)
    reference: Optional[str] = REFERENCE_NAME
    created: str = ""
    export_args: Dict[str, Any] = field(default_factory=dict)

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def output(self) -> TensorSpec:
        return self.outputs[0]

    def model(self, fmt: str) -> Optional[ModelFile]:
        """The model file of format ``fmt`` (``onnx`` / ``tensorrt``), or None."""
        return next((m for m in self.models if m.format == fmt), None)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "manifest") -> "Manifest":
        if not isinstance(d, dict):
            raise ArtifactError(f"{where} is not a JSON object; re-export the bundle with pand-export")
        require(d, ("format_version",), where)
        version = d["format_version"]
        if not isinstance(version, int) or version < 1:
            raise ArtifactError(f"{where}: bad format_version {version!r}")
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"{where} has format_version {version}, newer than this runtime understands ({FORMAT_VERSION}). "
                f"Upgrade pand-runtime on this device (pip install -U ./runtime from a newer pand checkout) or export with the older pand."
            )
        require(d, ("arch", "num_classes", "class_names", "preprocess", "inputs", "outputs", "precision", "models",
                     "valid"), where)
        if not isinstance(d["valid"], bool):
            raise bad_type(where, "valid", "true or false", d["valid"])
        for key in ("inputs", "outputs", "models"):
            get_list(d, key, where, dict, "a list of objects")
        if d.get("reference") is not None:
            check_file_name(d["reference"], f"{where}: reference")
        for key in ("batch", "max_batch"):
            if key in d and (get_int(d, key, where) < 1):
                raise bad_type(where, key, "an integer >= 1", d[key])
        if d.get("opset") is not None:
            get_int(d, "opset", where)
        if "dynamic_batch" in d and not isinstance(d["dynamic_batch"], bool):
            raise bad_type(where, "dynamic_batch", "true or false", d["dynamic_batch"])
        for key in ("source", "versions", "parity", "export_args"):
            if key in d:
                as_dict(d[key], f"{where}: field '{key}'")
        m = cls(
            format_version=version,
            arch=get_str(d, "arch", where),
            num_classes=get_int(d, "num_classes", where),
            class_names=list(get_list(d, "class_names", where, str, "a list of strings (one per class)")),
            preprocess=PreprocessSpec.from_dict(d["preprocess"]),
            inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
            precision=get_str(d, "precision", where),
            models=[ModelFile.from_dict(x) for x in d["models"]],
            valid=d["valid"],
            **{k: d[k] for k in ("int8_target", "opset", "dynamic_batch", "batch", "max_batch", "source", "versions",
                                 "parity", "reference", "created", "export_args") if k in d},
        )
        if len(m.class_names) != m.num_classes:
            raise ArtifactError(f"{where}: {len(m.class_names)} class names for num_classes={m.num_classes}")
        if not m.inputs or not m.outputs or not m.models:
            raise ArtifactError(f"{where}: needs at least one input, one output and one model file")
        return m


def load_manifest(bundle: Union[str, Path]) -> Manifest:
    """Read and validate ``bundle/manifest.json`` (no model files are touched).

    Raises:
        ArtifactError: no bundle / no manifest, a symlinked manifest, one over :data:`MAX_MANIFEST_BYTES` or nested
            deeper than :data:`MAX_MANIFEST_DEPTH`, unreadable JSON, missing fields, or a newer ``format_version``.
    """
    bundle = Path(bundle)
    path = bundle / MANIFEST_NAME
    if not bundle.is_dir():
        raise ArtifactError(f"bundle directory not found: {bundle} (pand-export writes one)")
    if path.is_symlink():
        raise ArtifactError(f"bundle {bundle}: {MANIFEST_NAME} is a symbolic link; bundle files must be regular files "
                            f"inside the bundle directory. Copy the real file in its place or re-export the bundle")
    if not path.is_file():
        raise ArtifactError(f"{bundle} is not a pand bundle: no {MANIFEST_NAME} in it (pand-export writes one)")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes; a pand manifest is a few KB. "
                                f"Re-export the bundle with pand-export")
        data = json.loads(raw.decode("utf-8"))
    except ArtifactError:
        raise
    except RecursionError:
        raise ArtifactError(f"{path} is nested too deeply to be a pand manifest (more than {MAX_MANIFEST_DEPTH} "
                            f"levels). Re-export the bundle with pand-export") from None
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise ArtifactError(f"cannot read {path}: {e}. Re-export the bundle with pand-export") from None
    if _depth(data) > MAX_MANIFEST_DEPTH:
        raise ArtifactError(f"{path} is nested too deeply to be a pand manifest (more than {MAX_MANIFEST_DEPTH} "
                            f"levels). Re-export the bundle with pand-export")
    return Manifest.from_dict(data, where=str(path))


def _depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` / ``{}`` 1), without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, d + 1)
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def verify_model_files(bundle: Union[str, Path], manifest: Manifest, formats: Optional[Sequence[str]] = None) -> None:
    """Check that each model file (of ``formats``, default all) exists and has the sha256 the manifest records.

    Raises:
        ArtifactError: naming the missing or tampered file and both hashes.
    """
    bundle = Path(bundle)
    for mf in manifest.models:
        if formats is not None and mf.format not in formats:
            continue
        path = bundle_file(bundle, mf.file, "model file")
        if not path.is_file():
            raise ArtifactError(f"bundle {bundle}: model file {mf.file} listed in the manifest is missing. "
                                f"Copy the whole bundle directory or re-export it")
        digest = sha256_file(path)
        if digest != mf.sha256:
            raise ArtifactError(
                f"bundle {bundle}: {mf.file} has sha256 {digest[:16]}..., the manifest expects {mf.sha256[:16]}... "
                f"The file was modified or truncated; copy the bundle again or re-export it")


def load_bundle(bundle: Union[str, Path], allow_invalid: bool = False, verify: bool = True,
                formats: Optional[Sequence[str]] = None) -> Manifest:
    """Load a bundle's manifest and run the integrity checks.

    Args:
        bundle: the bundle directory.
        allow_invalid: accept a bundle whose parity check failed (``valid: false``), e.g. to benchmark it.
        verify: check the sha256 of the model files (of ``formats``, default all).
        formats: model formats to verify.

    Raises:
        ArtifactError: see :func:`load_manifest` and :func:`verify_model_files`; also for ``valid: false`` unless
            ``allow_invalid``.
    """
    manifest = load_manifest(bundle)
    if not manifest.valid and not allow_invalid:
        reasons = "; ".join(manifest.parity.get("failures", [])) or "see parity in manifest.json"
        raise ArtifactError(f"bundle {bundle} is marked invalid by pand-export (parity check failed: {reasons}). "
                            f"Re-export it, or pass allow_invalid=True to load it anyway")
    if verify:
        verify_model_files(bundle, manifest, formats)
    return manifest


BENCH_DIR = "bench"  # pand-bench's default output folder inside a bundle (pand-bench.json, pand-bench.md)


def _is_bench_dir(p: Path) -> bool:
    """Whether ``p`` is the bundle's ``bench/`` folder holding nothing but pand-bench results (replaced with the
    bundle: they measured the old model)."""
    return (p.name == BENCH_DIR and p.is_dir() and not p.is_symlink()
            and all(f.is_file() and not f.is_symlink() and f.name.startswith("pand-bench") for f in p.iterdir()))


def check_replaceable(bundle: Path) -> None:
    """Refuse (:class:`ArtifactError`) unless ``bundle`` is absent, an empty directory, or provably a pand bundle: its
    ``manifest.json`` parses as a bundle manifest and the directory holds nothing but regular files that manifest
    lists (the manifest, the model files, the reference) and pand-bench's ``bench/`` results. Anything else may be the
    user's data and is never deleted.
    """
    if not bundle.exists() and not bundle.is_symlink():
        return
    fix = "choose another --output (or remove it yourself if it is really disposable)"
    if bundle.is_symlink() or not bundle.is_dir():
        raise ArtifactError(f"output {bundle} exists and is not a directory; {fix}")
    entries = sorted(bundle.iterdir())
    if not entries:
        return
    if not (bundle / MANIFEST_NAME).is_file():
        raise ArtifactError(f"output {bundle} exists and is not a pand bundle (no {MANIFEST_NAME}); {fix}. "
                            f"Only an earlier bundle or an empty directory is replaced")
    try:
        manifest = load_manifest(bundle)
    except ArtifactError as e:
        raise ArtifactError(f"output {bundle} holds a {MANIFEST_NAME} that is not a pand bundle manifest ({e}); "
                            f"{fix}. Only an earlier bundle or an empty directory is replaced") from None
    listed = {MANIFEST_NAME, *(m.file for m in manifest.models), *([manifest.reference] if manifest.reference else [])}
    foreign = [p.name for p in entries if (p.name not in listed or p.is_symlink() or not p.is_file())
               and not _is_bench_dir(p)]
    if foreign:
        raise ArtifactError(f"output {bundle} looks like a pand bundle but also holds {', '.join(foreign[:5])}"
                            f"{' ...' if len(foreign) > 5 else ''}, which its manifest does not list; {fix}. Nothing was "
                            f"deleted")


def publish_bundle(staging: Path, bundle: Path) -> None:
    """Move the finished staging directory onto ``bundle``, replacing an older bundle only at the very end (checked
    again here, so that files added to it during the export are never deleted). If the final rename fails, the older
    bundle is put back."""
    check_replaceable(bundle)
    old = None
    if bundle.exists():
        old = bundle.with_name(f".{bundle.name}.old-{int(time.time() * 1e6)}")
        bundle.rename(old)
    try:
        staging.rename(bundle)
    except BaseException:
        if old is not None:
            old.rename(bundle)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
