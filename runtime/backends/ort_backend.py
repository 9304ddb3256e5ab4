"""ONNX Runtime backend: one ``InferenceSession`` with chosen providers, thread counts and graph optimisation level."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import PandError

from .._lazy import onnxruntime as ort

__all__ = ["OrtBackend", "GRAPH_OPTIMIZATION_LEVELS", "resolve_providers"]

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def resolve_providers(providers: Optional[Sequence[str]], available: Sequence[str]) -> List[str]:
    """Map short or partial provider names (``cpu``, ``cuda``, ``tensorrt``) to ONNX Runtime provider names.

    Matching is case-insensitive: an alias, an exact name, or a unique substring of an available provider
    (Polygraphy's ``SessionFromOnnx`` rule). ``None`` means ``["CPUExecutionProvider"]``.

    Raises:
        PandError: a provider that is not available in this onnxruntime build, naming the available ones.
    """
    if not providers:
        return ["CPUExecutionProvider"]
    out: List[str] = []
    for p in providers:
        key = str(p).strip()
        name = _PROVIDER_ALIASES.get(key.lower(), key)
        if name not in available:
            matches = [a for a in available if key.lower() in a.lower()]
            if len(matches) != 1:
                raise PandError(f"ONNX Runtime provider '{p}' is not available in this onnxruntime build. "
                                f"Available: {', '.join(available)}")
            name = matches[0]
        if name not in out:
            out.append(name)
    return out


def _opt_level(level: str):
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if level not in levels:
        raise PandError(f"unknown graph optimisation level '{level}'. Valid: {', '.join(GRAPH_OPTIMIZATION_LEVELS)}")
    return levels[level]


class OrtBackend:
    """Runs an ONNX classifier with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        providers: execution providers in priority order (short names allowed, see :func:`resolve_providers`).
        intra_op_threads: threads inside an operator (0 = ONNX Runtime's default, all physical cores).
        inter_op_threads: threads across operators (0 = default).
        graph_optimization: ``disable`` | ``basic`` | ``extended`` | ``all`` (default; includes the NCHWc layout
            transforms and conv fusions that make the CPU provider fast).
        provider_options: optional per-provider option dicts (e.g. TensorRT EP ``trt_engine_cache_enable``).
    """

    name = "onnxruntime"

    def __init__(self, model_path: Union[str, Path], providers: Optional[Sequence[str]] = None,
                 intra_op_threads: int = 0, inter_op_threads: int = 0, graph_optimization: str = "all",
                 provider_options: Optional[Dict[str, Dict[str, str]]] = None):
        self.model_path = Path(model_path)
        so = ort.SessionOptions()
        so.graph_optimization_level = _opt_level(graph_optimization)
        so.intra_op_num_threads = int(intra_op_threads)
        so.inter_op_num_threads = int(inter_op_threads)
        so.log_severity_level = 3
        chosen = resolve_providers(providers, ort.get_available_providers())
        opts = [dict((provider_options or {}).get(p, {})) for p in chosen]
        try:
            self.session = ort.InferenceSession(str(self.model_path), so, providers=chosen, provider_options=opts)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise PandError(f"ONNX Runtime cannot load {self.model_path}: {e}") from e
        self.graph_optimization = graph_optimization
        self.intra_op_threads = int(intra_op_threads)
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = list(inp.shape)
        self.output_shape = list(out.shape)
        self.providers = list(self.session.get_providers())

    @property
    def fixed_batch(self) -> Optional[int]:
        """The batch size baked into the model, or None for a dynamic batch axis."""
        b = self.input_shape[0]
        return int(b) if isinstance(b, int) and b > 0 else None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits ``[N, C]`` for a float32 NCHW batch (``N`` must equal :attr:`fixed_batch` when that is set)."""
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def describe(self) -> Dict[str, object]:
        return {"backend": self.name, "providers": self.providers, "graph_optimization": self.graph_optimization,
                "intra_op_threads": self.intra_op_threads}

    def close(self) -> None:
        self.session = None
