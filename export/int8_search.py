"""Accuracy-aware INT8: keep the most quantization-sensitive layers in float until the model meets its target.

Plain post-training quantization reports a top-1 agreement and stops there; a model that misses it is unusable. This
module repairs it (``pand-export --precision int8``, on by default, target ``--min-agreement``, 0.99 for int8):

1. **Plain INT8** (everything but the classifier head quantized) is evaluated on the held-out parity images: top-1
   agreement with the PyTorch logits and the accuracy drop, exactly the export's parity gate
   (:func:`pand_runtime.metrics.check_parity`). If it passes, that is the model.
2. **Fallback units**: in a QDQ model an activation is quantized when its producer *or any* consumer is quantized,
   so keeping one node in float does not keep its activations in float. A unit is therefore an activation tensor
   together with the tensors it flows into through range-preserving ops (Relu, Clip, MaxPool, Reshape, Flatten...),
   and keeping the unit in float excludes (ORT ``nodes_to_exclude``) every quantizable node that produces or
   consumes one of its tensors: the tensor really stays float, and so do the weights of those nodes.
3. **Per-unit sensitivity** (leave one out): a model with everything quantized except one unit is run on the
   calibration images (training split, never the parity images) and the unit is scored by how much it lowers the
   relative logit error against the fp32 ONNX model, ``sum (z_q - z_f)^2 / sum z_f^2``. An activation with a huge
   outlier (an 8-bit grid too coarse for everything else in it) makes its unit by far the most sensitive.
4. **Fallback**: the most sensitive units are kept in float, fewest first: 1, 2, ... 6 units, then 8, 12, 18, 27,
   ... and, once a count passes, a bisection down to the fewest that pass. Every step is evaluated like step 1 and
   timed (p50 at batch 1, ONNX Runtime CPU), and all steps go to the manifest.

If no step passes, the step with the best agreement is kept and the export marks the bundle invalid as before.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from pand_runtime.backends.base import run_batched
from pand_runtime.bench_timing import measure
from pand_runtime.metrics import Tolerance
from pand_runtime.parity import backend_parity

from .quantize import Int8Quantizer, Int8Recipe

__all__ = ["RANGE_PRESERVING", "SearchStep", "FallbackUnit", "fallback_units", "unit_sensitivity", "run_onnx",
           "p50_latency_ms", "fallback_schedule", "accuracy_aware_int8"]

log = logging.getLogger("pand.export")

#: single-input ops whose output carries its input's range (and outliers): a unit extends through them
RANGE_PRESERVING = frozenset({"Relu", "Clip", "LeakyRelu", "MaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                              "Transpose", "Identity", "Slice", "Pad"})


@dataclass
class SearchStep:
    """One evaluated candidate model of the search."""

    n_units: int  # fallback units kept in float
    n_float: int  # nodes kept in float beyond the base (the classifier head unless --quantize-head)
    float_nodes: List[str]  # all nodes kept in float, base included
    agreement: float  # top-1 agreement with PyTorch on the parity images
    top1: Optional[float]
    acc_delta: Optional[float]
    mean_cosine: float
    p50_ms: Optional[float]  # batch 1, ONNX Runtime CPU
    passed: bool
    failures: List[str] = field(default_factory=list)


def _session(path: Union[str, Path], threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class _SessionBackend:
    """An ONNX Runtime ``InferenceSession`` seen as a :class:`pand_runtime.backends.base.Backend` (the search runs
    many candidate models through plain CPU sessions)."""

    name = "onnxruntime"

    def __init__(self, session: Any):
        inp = session.get_inputs()[0]
        self.session, self.input_name, self.output_name = session, inp.name, session.get_outputs()[0].name
        self._fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None

    @property
    def fixed_batch(self) -> Optional[int]:
        return self._fixed

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "providers": list(self.session.get_providers())}

    def close(self) -> None:
        self.session = None


def run_onnx(path_or_session: Any, x: np.ndarray, threads: int = 0, batch: int = 32) -> np.ndarray:
    """Logits of an ONNX model (path or ``InferenceSession``) on ``x [N, 3, S, S]``, in chunks of ``batch``
    (a static-batch model gets its last chunk zero-padded): :func:`pand_runtime.backends.base.run_batched`."""
    sess = _session(path_or_session, threads) if isinstance(path_or_session, (str, Path)) else path_or_session
    return run_batched(_SessionBackend(sess), np.asarray(x, dtype=np.float32), batch)


def p50_latency_ms(path_or_session: Any, x1: np.ndarray, threads: int = 0, iterations: int = 30,
                   min_time: float = 0.3, warmup: int = 3) -> float:
    """Median latency (ms) of one run on ``x1`` (batch 1; a static-batch model gets its batch) after ``warmup``
    runs: at least ``iterations`` runs and ``min_time`` seconds (pand-bench's timer,
    :func:`pand_runtime.bench_timing.measure`)."""
    sess = _session(path_or_session, threads) if isinstance(path_or_session, (str, Path)) else path_or_session
    inp = sess.get_inputs()[0]
    if isinstance(inp.shape[0], int) and inp.shape[0] > 0 and len(x1) != inp.shape[0]:  # a static-batch model
        x1 = np.resize(x1, (inp.shape[0], *x1.shape[1:]))
    feed = {inp.name: np.ascontiguousarray(x1, dtype=np.float32)}
    samples = measure(lambda: sess.run(None, feed), warmup_ms=0.0, iterations=iterations, min_time=min_time,
                      warmup_calls=warmup)
    return float(np.median(samples))


@dataclass
class FallbackUnit:
    """Activation tensors joined by range-preserving ops, and the quantizable nodes that touch them."""

    name: str  # the first tensor of the unit (graph order)
    tensors: List[str]
    nodes: List[str]


def fallback_units(model: Any, base_float: Sequence[str] = ()) -> List[FallbackUnit]:
    """The fallback units of a (pre-processed) fp32 ONNX ``model`` in graph order (see the module docstring): float
    activation tensors merged across :data:`RANGE_PRESERVING` ops; each unit lists the quantizable nodes (ONNX
    Runtime's QDQ/QLinear op registries) that produce or consume its tensors, minus ``base_float``. Units with no
    node left, and duplicates, are dropped."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    g = model.graph
    quantizable = set(QDQRegistry) | set(QLinearOpsRegistry)
    floats = {v.name for v in list(g.input) + list(g.value_info) + list(g.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    floats -= {i.name for i in g.initializer}
    parent: Dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    order: List[str] = []
    touching: Dict[str, List[str]] = {}
    for node in g.node:
        tensors = [t for t in list(node.input) + list(node.output) if t in floats]
        for t in tensors:
            if t not in touching:
                touching[t] = []
                order.append(t)
            if node.op_type in quantizable and node.name:
                touching[t].append(node.name)
        if node.op_type in RANGE_PRESERVING and node.input and node.input[0] in floats and node.output[0] in floats:
            parent[find(node.output[0])] = find(node.input[0])
    groups: Dict[str, List[str]] = {}
    for t in order:
        groups.setdefault(find(t), []).append(t)
    skip = set(base_float)
    units: List[FallbackUnit] = []
    seen = set()
    for tensors in groups.values():
        nodes = list(dict.fromkeys(n for t in tensors for n in touching[t] if n not in skip))
        key = frozenset(nodes)
        if nodes and key not in seen:
            seen.add(key)
            units.append(FallbackUnit(tensors[0], tensors, nodes))
    return units


def _union(base: Sequence[str], units: Sequence[FallbackUnit]) -> List[str]:
    return list(dict.fromkeys(list(base) + [n for u in units for n in u.nodes]))


def unit_sensitivity(q: Int8Quantizer, units: Sequence[FallbackUnit], x: np.ndarray, base_float: Sequence[str] = (),
                     threads: int = 0) -> List[Tuple[FallbackUnit, float]]:
    """Leave-one-out sensitivity of each unit on ``x``: the relative logit error ``sum (z_q - z_f)^2 / sum z_f^2``
    of the fully quantized model minus that of the model with the unit kept in float (``z_f``: the pre-processed
    fp32 ONNX model). Most sensitive first. One quantization and one run per unit (a progress bar counts them: a
    student with a few hundred units takes minutes on a 2-core CPU)."""
    ref = run_onnx(q.preprocessed, x, threads).astype(np.float64)
    denom = float((ref ** 2).sum()) or 1.0
    path = q.preprocessed.parent / "sensitivity.onnx"

    def err(float_nodes: List[str]) -> float:
        q.quantize(path, float_nodes)
        return float(((run_onnx(path, x, threads).astype(np.float64) - ref) ** 2).sum() / denom)

    from tqdm import tqdm

    full = err(list(base_float))
    scores = [(u, full - err(_union(base_float, [u])))
              for u in tqdm(units, desc="INT8 sensitivity", unit="unit", leave=False)]
    path.unlink(missing_ok=True)
    return sorted(scores, key=lambda t: -t[1])


def fallback_schedule(n: int) -> List[int]:
    """How many of ``n`` ranked units each step keeps in float: 1..6, then 8, 12, 18, 27, ... (x1.5) and ``n``."""
    ks = list(range(1, min(n, 6) + 1))
    k = 8
    while k < n:
        ks.append(k)
        k += k // 2
    if n > 6:
        ks.append(n)
    return sorted(set(ks))


def accuracy_aware_int8(q: Int8Quantizer, dst: Union[str, Path], parity_inputs: np.ndarray, ref_logits: np.ndarray,
                        labels: Optional[np.ndarray], tolerance: Tolerance, base_float: Sequence[str] = (),
                        threads: int = 0, max_units: Optional[int] = None, sensitivity_images: int = 256,
                        time_steps: bool = True) -> Tuple[Int8Recipe, Dict[str, Any]]:
    """Quantize with ``q`` to ``dst``, keeping the fewest sensitive units in float that make the model pass
    ``tolerance`` on the parity images (see the module docstring).

    Args:
        q: a calibrated :class:`Int8Quantizer`.
        dst: the QDQ model to write.
        parity_inputs / ref_logits / labels: the held-out parity images (float32 NCHW), the PyTorch logits on them
            and their labels (the export's parity set).
        tolerance: the int8 pass criteria (``min_agreement`` is the target).
        base_float: nodes always kept in float (the classifier head unless ``--quantize-head``).
        threads: ONNX Runtime intra-op threads.
        max_units: the most units the search may keep in float (None = all).
        sensitivity_images: calibration images used for the sensitivity scores (more rank better: on a 64 px
            ResNet-18 student 256 images met 99% with 10 units where 64 images needed 22).
        time_steps: measure each step's p50 latency.

    Returns:
        ``(recipe, report)``: the recipe of the written model (``float_nodes`` = base + fallback nodes) and a
        JSON-able report ``{target, passed, chosen_step, float_nodes, fallback_nodes, fp32_p50_ms, units,
        sensitivity, steps, seconds}``.
    """
    t_start = time.perf_counter()
    base = list(base_float)
    x1 = parity_inputs[:1] if len(parity_inputs) else q.batches[0][:1]
    steps: List[SearchStep] = []
    scratch = q.preprocessed.parent / "search.onnx"

    def evaluate(units: Sequence[FallbackUnit]) -> SearchStep:
        float_nodes = _union(base, units)
        q.quantize(scratch, float_nodes)
        sess = _session(scratch, threads)
        res, record = backend_parity(_SessionBackend(sess), np.asarray(parity_inputs, dtype=np.float32), ref_logits,
                                     labels, tolerance, 32)
        fails = record["failures"]
        step = SearchStep(n_units=len(units), n_float=len(float_nodes) - len(base), float_nodes=float_nodes,
                          agreement=res.top1_agreement, top1=res.acc_out, acc_delta=res.acc_delta,
                          mean_cosine=res.mean_cosine,
                          p50_ms=p50_latency_ms(sess, x1, threads) if time_steps else None,
                          passed=not fails, failures=fails)
        steps.append(step)
        acc = "" if step.top1 is None else f", top-1 {step.top1:.2%}"
        lat = "" if step.p50_ms is None else f", p50 {step.p50_ms:.2f} ms"
        log.info("INT8 search: %d unit(s) = %d node(s) in float%s -> agreement %.2f%%%s%s: %s", step.n_units,
                 step.n_float, f" (+{units[-1].name})" if units else "", 100 * step.agreement, acc, lat,
                 "PASS" if step.passed else "FAIL")
        return step

    first = evaluate([])
    fp32_p50 = p50_latency_ms(q.preprocessed, x1, threads) if time_steps else None
    report: Dict[str, Any] = {"target": tolerance.min_agreement, "max_acc_drop": tolerance.max_acc_drop,
                              "fp32_p50_ms": fp32_p50, "sensitivity_images": 0, "units": 0, "sensitivity": []}
    chosen = first
    if not first.passed:
        units = fallback_units(q.model, base)
        xs = np.concatenate(q.batches)[:max(1, sensitivity_images)]
        log.info("INT8 search: plain INT8 misses the target (agreement %.2f%%, target %.2f%%); leave-one-out "
                 "sensitivity of %d unit(s) on %d calibration image(s)", 100 * first.agreement,
                 100 * (tolerance.min_agreement or 0), len(units), len(xs))
        ranked = unit_sensitivity(q, units, xs, base, threads)
        report.update(sensitivity_images=int(len(xs)), units=len(units),
                      sensitivity=[{"unit": u.name, "nodes": u.nodes, "error_reduction": s} for u, s in ranked])
        order = [u for u, _ in ranked]
        limit = len(order) if max_units is None else max(0, min(int(max_units), len(order)))
        by_k: Dict[int, SearchStep] = {0: first}
        lo = 0
        for k in fallback_schedule(limit):
            by_k[k] = evaluate(order[:k])
            if by_k[k].passed:
                hi = k
                while hi - lo > 1:  # the fewest units that pass
                    mid = (lo + hi) // 2
                    by_k[mid] = evaluate(order[:mid])
                    lo, hi = (lo, mid) if by_k[mid].passed else (mid, hi)
                chosen = by_k[hi]
                break
            lo = k
        else:
            chosen = max(steps, key=lambda s: (s.agreement, -s.n_float))
    recipe = q.quantize(dst, chosen.float_nodes)
    scratch.unlink(missing_ok=True)
    report.update(passed=chosen.passed, chosen_step=steps.index(chosen), float_nodes=list(chosen.float_nodes),
                  fallback_nodes=chosen.float_nodes[len(base):], steps=[asdict(s) for s in steps],
                  seconds=round(time.perf_counter() - t_start, 2))
    log.info("INT8 search: %s with %d node(s) in float beyond the base (%s) after %d step(s), %.1fs",
             "target met" if chosen.passed else "target NOT met", chosen.n_float,
             ", ".join(report["fallback_nodes"]) or "none", len(steps), report["seconds"])
    if q.recipe.target != "cpu":  # the symmetric flavour is meant for TensorRT; ORT's CPU s8s8 kernels are slow
        report["latency_note"] = "p50 on ONNX Runtime's CPU provider, not TensorRT's"
    elif fp32_p50 and chosen.p50_ms and chosen.p50_ms >= 0.9 * fp32_p50:
        log.warning("INT8 search: the chosen model (p50 %.2f ms) is not clearly faster than fp32 (%.2f ms): too many "
                    "layers had to stay in float for the target (a student with near-tie logits?). Consider fp32/fp16, "
                    "a lower --min-agreement, or more --calib-images", chosen.p50_ms, fp32_p50)
    return recipe, report
