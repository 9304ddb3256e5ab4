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

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from pand.errors import ArtifactError

__all__ = [
    "FORMAT_VERSION", "MANIFEST_NAME", "REFERENCE_NAME", "PreprocessSpec", "TensorSpec", "ModelFile", "Manifest",
    "load_manifest", "load_bundle", "verify_model_files", "sha256_file",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
REFERENCE_NAME = "reference.npz"
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")

Dim = Union[int, str]  # a fixed size or a symbolic name ("batch")


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _require(d: Dict[str, Any], keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise ArtifactError(f"{what} lacks the field(s) {', '.join(missing)}; re-export the bundle with pand-export")


@dataclass
class PreprocessSpec:
    """The eval transform, exactly: resize the shorter side, center crop, RGB, scale, normalise, NCHW float32.

    ``out = (crop(resize(img)) / 255 - mean) / std`` channel-wise, where resize maps the shorter side to
    ``resize_size`` (the longer side to ``int(resize_size * long / short)``, as torchvision does) with PIL's
    ``interpolation`` filter, and crop takes the centred ``image_size`` square (top/left offsets
    ``int(round((H - image_size) / 2))``).
    """

    image_size: int
    resize_size: int
    interpolation: str = "bilinear"
    mean: List[float] = field(default_factory=lambda: [0.48145466, 0.4578275, 0.40821073])
    std: List[float] = field(default_factory=lambda: [0.26862954, 0.26130258, 0.27577711])
    color_order: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    scale: float = 1.0 / 255.0
    resize_mode: str = "shorter_side"
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ArtifactError(f"preprocess.interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ArtifactError(f"preprocess mean/std need 3 values (RGB); got mean={self.mean}, std={self.std}")
        if self.resize_size < self.image_size:
            raise ArtifactError(f"preprocess.resize_size {self.resize_size} < image_size {self.image_size}")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PreprocessSpec":
        _require(d, ("image_size", "resize_size", "interpolation", "mean", "std"), "manifest 'preprocess'")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["mean"] = [float(v) for v in known["mean"]]
        known["std"] = [float(v) for v in known["std"]]
        known["image_size"] = int(known["image_size"])
        known["resize_size"] = int(known["resize_size"])
        return cls(**known)


@dataclass
class TensorSpec:
    """Name, shape (ints or a symbolic name such as ``"batch"``) and numpy dtype name of a model input/output."""

    name: str
    shape: List[Dim]
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TensorSpec":
        _require(d, ("name", "shape"), "manifest tensor spec")
        return cls(name=str(d["name"]), shape=list(d["shape"]), dtype=str(d.get("dtype", "float32")))


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
        _require(d, ("file", "format", "sha256"), "manifest 'models' entry")
        return cls(file=str(d["file"]), format=str(d["format"]), sha256=str(d["sha256"]),
                   size_bytes=int(d.get("size_bytes", 0)), info=dict(d.get("info") or {}))


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
        _require(d, ("format_version",), where)
        version = d["format_version"]
        if not isinstance(version, int) or version < 1:
            raise ArtifactError(f"{where}: bad format_version {version!r}")
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"{where} has format_version {version}, newer than this runtime understands ({FORMAT_VERSION}). "
                f"Upgrade pand on this device (pip install -U 'pand[runtime]') or export with the older pand."
            )
        _require(d, ("arch", "num_classes", "class_names", "preprocess", "inputs", "outputs", "precision", "models",
                     "valid"), where)
        m = cls(
            format_version=version,
            arch=str(d["arch"]),
            num_classes=int(d["num_classes"]),
            class_names=[str(c) for c in d["class_names"]],
            preprocess=PreprocessSpec.from_dict(d["preprocess"]),
            inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
            precision=str(d["precision"]),
            models=[ModelFile.from_dict(x) for x in d["models"]],
            valid=bool(d["valid"]),
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
        ArtifactError: no bundle / no manifest, unreadable JSON, missing fields, or a newer ``format_version``.
    """
    bundle = Path(bundle)
    path = bundle / MANIFEST_NAME
    if not bundle.is_dir():
        raise ArtifactError(f"bundle directory not found: {bundle} (pand-export writes one)")
    if not path.is_file():
        raise ArtifactError(f"{bundle} is not a pand bundle: no {MANIFEST_NAME} in it (pand-export writes one)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"cannot read {path}: {e}. Re-export the bundle with pand-export") from e
    return Manifest.from_dict(data, where=str(path))


def verify_model_files(bundle: Union[str, Path], manifest: Manifest, formats: Optional[Sequence[str]] = None) -> None:
    """Check that each model file (of ``formats``, default all) exists and has the sha256 the manifest records.

    Raises:
        ArtifactError: naming the missing or tampered file and both hashes.
    """
    bundle = Path(bundle)
    for mf in manifest.models:
        if formats is not None and mf.format not in formats:
            continue
        path = bundle / mf.file
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
