"""``Predictor``: load a bundle, preprocess images exactly like the training eval transform, return top-k classes.

Example:
    >>> from pand_runtime import Predictor
    >>> p = Predictor.from_bundle("runs/tiny/export/onnx-fp32")
    >>> p.predict(["bird.jpg"], top_k=3)[0].labels
    ['red_crested_spotted', 'red_crested_plain', 'blue_crested_spotted']
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .backends.base import Backend, run_batched
from .backends.ort_backend import OrtBackend
from .backends.trt_backend import TrtBackend
from .errors import ArtifactError, PandError
from .int8_check import Int8CpuWarning, int8_cpu_warning
from .manifest import REFERENCE_NAME, Manifest, bundle_file, load_bundle
from .metrics import softmax, topk
from .model_io import check_model_io
from .model_kinds import BACKEND_NAMES, kind_of_backend
from .preprocess import prepare_batch
from .reference import load_reference
from .trt_env import probe

__all__ = ["Prediction", "Predictor", "BACKENDS", "EngineFallbackWarning"]

BACKENDS = ("auto", *BACKEND_NAMES)


class EngineFallbackWarning(UserWarning):
    """``backend="auto"``: the bundle's TensorRT engine cannot run here, so its ONNX model runs on ONNX Runtime
    instead. The message names the cause (TensorRT or pycuda missing, no GPU, an engine built with another TensorRT
    version or for another GPU, a load error) and the fix."""


@dataclass
class Prediction:
    """Top-k result for one image: class names, class indices and softmax probabilities, best first."""

    labels: List[str]
    indices: List[int]
    probs: List[float]

    @property
    def label(self) -> str:
        """The top-1 class name."""
        return self.labels[0]

    def to_dict(self) -> Dict[str, Any]:
        return {"labels": self.labels, "indices": self.indices, "probs": self.probs}


def _warn_fallback(bundle: Path, cause: str, fix: str) -> None:
    """The one :class:`EngineFallbackWarning` of ``backend="auto"``: why the engine is not used, and the fix."""
    warnings.warn(f"bundle {bundle}: not using its TensorRT engine: {cause}. Fix: {fix}. Running its ONNX model on "
                  f"ONNX Runtime instead", EngineFallbackWarning, stacklevel=3)


class Predictor:
    """A classifier bundle ready to run. Build with :meth:`from_bundle`."""

    def __init__(self, bundle: Path, manifest: Manifest, backend: Backend):
        self.bundle = bundle
        self.manifest = manifest
        self.backend = backend
        self.spec = manifest.preprocess
        self.class_names = list(manifest.class_names)
        self.max_batch = int(backend.fixed_batch or manifest.max_batch or 32)
        self._closed = False
        try:  # input size and class count = the manifest's, before any run
            check_model_io(manifest, backend, bundle)
        except ArtifactError:
            self.close()  # free the session / device buffers of a bundle that is refused
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise PandError(f"the predictor of {self.bundle} is closed (close() or the end of its with-block freed "
                            f"its model); create a new one with Predictor.from_bundle")

    @classmethod
    def from_bundle(cls, path: Union[str, Path], backend: str = "auto", providers: Optional[Sequence[str]] = None,
                    threads: int = 0, graph_optimization: str = "all", allow_invalid: bool = False,
                    verify: bool = True, device: int = 0) -> "Predictor":
        """Load a bundle written by ``pand-export``.

        Args:
            path: the bundle directory.
            backend: ``auto`` (TensorRT when the bundle has an engine and TensorRT, pycuda and a CUDA GPU are
                present, else ONNX Runtime; when the bundle has an engine that cannot be used here, whether TensorRT,
                pycuda or the GPU is missing, the engine was built with another TensorRT version or for another GPU,
                or loading it fails in any way, the ONNX model runs on ONNX Runtime with one
                :class:`EngineFallbackWarning` naming the cause and the fix), ``onnxruntime`` or ``tensorrt`` (any
                failure to load the engine is a :class:`PandError`).
            providers: ONNX Runtime execution providers in priority order (``cpu``, ``cuda``, ``tensorrt`` or full
                names); default CPU.
            threads: ONNX Runtime intra-op threads (0 = its default).
            graph_optimization: ONNX Runtime level ``disable`` | ``basic`` | ``extended`` | ``all``.
            allow_invalid: load a bundle whose export parity check failed.
            verify: check the model file's sha256 against the manifest.
            device: CUDA device for the TensorRT backend.

        Warns:
            Int8CpuWarning: an int8 bundle on the ONNX Runtime CPU provider of a CPU whose int8 kernels differ
                from those of the CPU it was validated on (:mod:`pand_runtime.int8_check`).

        Raises:
            ArtifactError: missing/tampered model file, newer bundle format, invalid bundle, no usable model.
            PandError: an unknown backend or a backend whose library is not installed.
        """
        path = Path(path)
        if backend not in BACKENDS:
            raise PandError(f"unknown backend '{backend}'. Valid: {', '.join(BACKENDS)}")
        manifest = load_bundle(path, allow_invalid=allow_invalid, verify=False)
        auto = backend == "auto"
        if auto:
            backend = "onnxruntime"
            if manifest.model("tensorrt") is not None:
                missing = probe(device).missing
                if not missing:
                    backend = "tensorrt"
                elif manifest.model("onnx") is None:
                    raise PandError(f"bundle {path} has only a TensorRT engine, which cannot run here: {missing[0]}")
                else:
                    _warn_fallback(path, f"{missing[0].what}", missing[0].fix)
        fmt = kind_of_backend(backend).format  # the one backend -> model file table (.model_kinds)
        mf = manifest.model(fmt)
        if mf is None:
            have = ", ".join(m.format for m in manifest.models)
            how = "re-export with pand-export --format onnx" if fmt == "onnx" else \
                "build an engine on this device with pand-engine BUNDLE"
            raise ArtifactError(f"bundle {path} has no {fmt} model (it has: {have}); choose another backend or {how}")
        if verify:
            load_bundle(path, allow_invalid=True, verify=True, formats=[fmt])
        if backend == "onnxruntime":
            impl = OrtBackend(bundle_file(path, mf.file, "model file"), providers=providers,
                              intra_op_threads=threads, graph_optimization=graph_optimization)
            int8 = mf.info.get("int8")
            if int8 and impl.providers and impl.providers[0] == "CPUExecutionProvider":
                msg = int8_cpu_warning(int8)
                if msg:
                    warnings.warn(f"bundle {path}: {msg}", Int8CpuWarning, stacklevel=2)
            return cls(path, manifest, impl)
        try:
            impl = TrtBackend(bundle_file(path, mf.file, "model file"), expected=mf.info, device=device)
        except Exception as e:  # noqa: BLE001 - TrtBackend turns the TRT/pycuda stack's errors into PandError
            if not isinstance(e, PandError):
                e = PandError(f"bundle {path}: cannot load its TensorRT engine ({type(e).__name__}: {e})")
            if not auto or manifest.model("onnx") is None:
                if str(path) not in str(e):  # e.g. "TensorRT cannot be imported": say which bundle wanted it
                    raise type(e)(f"bundle {path}: {e}") from e
                raise e
            _warn_fallback(path, str(e), "the message above says how (usually: rebuild the engine on this device "
                                         "with pand-engine BUNDLE)")
            return cls.from_bundle(path, backend="onnxruntime", providers=providers, threads=threads,
                                   graph_optimization=graph_optimization, allow_invalid=allow_invalid,
                                   verify=verify, device=device)
        return cls(path, manifest, impl)

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def preprocess(self, images: Any) -> np.ndarray:
        """Images (see :func:`pand_runtime.preprocess.prepare_batch`) -> float32 ``[N, 3, S, S]``."""
        return prepare_batch(images, self.spec)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits ``[N, C]`` for a preprocessed float32 batch of any size (split into chunks of at most
        :attr:`max_batch`; a fixed-batch model gets its last chunk zero-padded and the padding dropped)."""
        self._check_open()
        x = prepare_batch(x, self.spec)
        logits = run_batched(self.backend, x, self.max_batch).astype(np.float32, copy=False)
        if logits.ndim != 2 or logits.shape[1] != len(self.class_names):
            raise ArtifactError(f"model output has shape {logits.shape}, the manifest lists {len(self.class_names)} "
                                f"classes; the bundle is inconsistent, re-export it")
        if not np.isfinite(logits).all():
            raise ArtifactError(f"the model of bundle {self.bundle} returned NaN or inf logits for finite inputs; its "
                                f"weights are broken: re-export it from a healthy checkpoint with pand-export")
        return logits

    def predict_logits(self, images: Any) -> np.ndarray:
        """Preprocess ``images`` and return the raw logits ``[N, C]``."""
        return self.run(self.preprocess(images))

    def predict(self, images: Any, top_k: int = 5) -> List[Prediction]:
        """Top-``k`` class names and softmax probabilities for each image.

        Args:
            images: a PIL image, file path, uint8 ``(H, W, 3)`` RGB array, a list of those, a uint8
                ``(N, H, W, 3)`` array, or a preprocessed float32 ``(N, 3, S, S)`` array.
            top_k: how many classes per image, an integer >= 1 (capped at the number of classes).

        Raises:
            PandError: ``top_k`` is not an integer >= 1, the predictor is closed, or the images are unusable.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise PandError(f"top_k must be an integer >= 1 (at most {len(self.class_names)} classes are returned); "
                            f"got {top_k!r}")
        self._check_open()
        probs = softmax(self.predict_logits(images))
        idx, val = topk(probs, top_k)
        return [Prediction([self.class_names[j] for j in row], [int(j) for j in row], [float(v) for v in vals])
                for row, vals in zip(idx, val)]

    def reference(self) -> Optional[Dict[str, np.ndarray]]:
        """The bundle's stored parity data (``images_u8``, ``labels``, ``logits``), or None if it has none."""
        path = bundle_file(self.bundle, self.manifest.reference or REFERENCE_NAME, "reference")
        if not path.is_file():
            return None
        return load_reference(path, self.manifest)  # no pickles; dtypes and shapes checked (ArtifactError)

    def describe(self) -> Dict[str, Any]:
        return {"bundle": str(self.bundle), "precision": self.precision, **self.backend.describe()}

    def close(self) -> None:
        """Free the model; later predictions raise a :class:`PandError` saying the predictor is closed. Idempotent."""
        if not self._closed:
            self._closed = True
            self.backend.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Predictor({self.bundle}, backend={self.backend_name}, precision={self.precision}, "
                f"classes={len(self.class_names)})")
