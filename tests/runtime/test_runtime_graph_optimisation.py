"""The Predictor's default ONNX Runtime session optimises the graph, checked without a clock.

A timing ratio (tests/latency) says the same under an idle machine but drifts with the load of a shared one; this
checks the cause instead: the session's optimisation level and what ONNX Runtime makes of an exported student at it.
"""
from collections import Counter

import onnx
import onnxruntime as ort

from pand_runtime import Predictor
from pand_runtime.backends.ort_backend import _opt_level


def _optimised_ops(model_path, level, out_path) -> Counter:
    """Op counts of the graph ONNX Runtime runs at ``level`` (written through ``optimized_model_filepath``)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.optimized_model_filepath = str(out_path)
    so.log_severity_level = 3  # the "hardware-specific model" warning for level ALL
    ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(out_path)).graph.node)


def test_default_session_optimises_at_level_all(rt_bundle):
    p = Predictor.from_bundle(rt_bundle)
    level = p.backend.session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert p.backend.describe()["graph_optimization"] == "all"
    off = Predictor.from_bundle(rt_bundle, graph_optimization="disable")
    assert off.backend.session.get_session_options().graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_level_all_fuses_the_exported_student(rt_bundle, tmp_path):
    """At the default level the student's activations fold into its convolutions and the graph shrinks; with
    optimisations off ONNX Runtime runs the exported graph node for node."""
    backend = Predictor.from_bundle(rt_bundle).backend
    model, default_level = backend.model_path, backend.session.get_session_options().graph_optimization_level
    exported = Counter(n.op_type for n in onnx.load(str(model)).graph.node)
    assert exported["Conv"] > 0 and exported["Relu"] > 0
    off = _optimised_ops(model, _opt_level("disable"), tmp_path / "off.onnx")
    assert off == exported
    on = _optimised_ops(model, default_level, tmp_path / "all.onnx")
    assert on["Relu"] == 0, f"ReLU not fused into the convolutions at level ALL: {dict(on)}"
    assert sum(on.values()) < sum(exported.values()) / 2, (dict(on), dict(exported))
