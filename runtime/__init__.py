"""pand runtime: run an exported classifier bundle with ONNX Runtime or TensorRT. No torch, anywhere.

Install on a device with ``pip install ./runtime`` from a pand checkout (distribution ``pand-runtime``; add the
``[trt]`` extra for TensorRT + pycuda)::

    from pand_runtime import Predictor
    p = Predictor.from_bundle("runs/tiny/export/onnx-fp32", backend="auto")
    print(p.predict(["bird.jpg"], top_k=5)[0].labels)

Modules: :mod:`.manifest` (bundle format and checks), :mod:`.preprocess` (the eval transform in numpy + PIL),
:mod:`.predictor`, :mod:`.backends` (ONNX Runtime, TensorRT), :mod:`.metrics`, :mod:`.bench` (``pand-bench``),
:mod:`.engine` (``pand-engine``: build a TensorRT engine from a bundle on the device) and :mod:`.trt_build` (the
TensorRT builder shared with ``pand-export --format trt``).
Heavy libraries are imported lazily (:mod:`._lazy`).
"""
from .manifest import FORMAT_VERSION, Manifest, ModelFile, PreprocessSpec, TensorSpec, load_bundle, load_manifest
from .predictor import BACKENDS, EngineFallbackWarning, Prediction, Predictor

__all__ = [
    "BACKENDS", "EngineFallbackWarning", "FORMAT_VERSION", "Manifest", "ModelFile", "Prediction", "Predictor", "PreprocessSpec", "TensorSpec",
    "load_bundle", "load_manifest",
]
