"""pand runtime: run an exported classifier bundle with ONNX Runtime or TensorRT. No torch, anywhere.

Install on a device with ``pip install ./runtime`` from a pand checkout (distribution ``pand-runtime``; add the
``[trt]`` extra for TensorRT + pycuda)::

    from pand_runtime import Predictor
    p = Predictor.from_bundle("runs/tiny/export/onnx-fp32", backend="auto")
    print(p.predict(["bird.jpg"], top_k=5)[0].labels)

Modules: :mod:`.manifest` (bundle format and checks), :mod:`.preprocess_spec` (the eval transform as data, one type
for training, export and runtime), :mod:`.preprocess` (that transform in numpy + PIL), :mod:`.predictor`,
:mod:`.backends` (the Backend protocol and batched runs, ONNX Runtime, TensorRT), :mod:`.metrics`, :mod:`.bench`
(``pand-bench``, with its parts in ``bench_*``),
:mod:`.engine` (``pand-engine``: build a TensorRT engine from a bundle on the device) and :mod:`.trt_build` (the
TensorRT builder shared with ``pand-export --format trt``).
Heavy libraries are imported lazily (:mod:`._lazy`).
"""
from .manifest import FORMAT_VERSION, Manifest, ModelFile, TensorSpec, load_bundle, load_manifest
from .predictor import BACKENDS, EngineFallbackWarning, Prediction, Predictor
from .preprocess_spec import PreprocessSpec

__all__ = [
    "BACKENDS", "EngineFallbackWarning", "FORMAT_VERSION", "Manifest", "ModelFile", "Prediction", "Predictor", "PreprocessSpec", "TensorSpec",
    "load_bundle", "load_manifest",
]
