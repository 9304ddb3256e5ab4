"""The ``pand-bench`` table as plain text and Markdown, and the warnings about unstable rows."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from .bench_rows import BenchRow

__all__ = ["render_text", "render_markdown", "cv_warnings", "cv_advice", "runs_on_cpu", "accuracy_notes"]


def runs_on_cpu(r: BenchRow) -> bool:
    """Whether row ``r`` ran on the CPU: PyTorch on ``cpu``, or ONNX Runtime with only the CPU provider."""
    if r.backend == "pytorch":
        return str(r.details.get("device", "cpu")) == "cpu"
    if r.backend == "onnxruntime":
        providers = [str(p) for p in r.details.get("providers") or []]
        return not providers or all(p == "CPUExecutionProvider" for p in providers)
    return False


def cv_advice(r: BenchRow) -> str:
    """How to steady the timings of row ``r``, for its kind of device."""
    if runs_on_cpu(r):
        return ("close other work, pin the threads (--threads N, at most the free cores) and set the CPU "
                "frequency governor to performance (cpupower frequency-set -g performance) or use a longer --min-time")
    return "lock the GPU clocks (nvidia-smi -lgc, or jetson_clocks on Jetson), close other work"


def cv_warnings(rows: Sequence[BenchRow], limit: float) -> List[str]:
    """One line per row whose latency coefficient of variation exceeds ``limit`` (trtexec warns above 2.5%), with
    advice that fits the row's device (:func:`cv_advice`)."""
    return [f"{r.key}: latency CV {r.cv:.1%} > {limit:.1%}: the timings are unstable (a busy machine, floating "
            f"clocks, thermal throttling); {cv_advice(r)}, and rerun"
            for r in rows if r.status == "ok" and r.cv is not None and r.cv > limit]


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


_COLUMNS = ("bundle", "backend", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "CV %", "GPU ms",
            "vs torch", "top-1 %", "agree %", "max abs diff", "float layers", "status")


def _cells(r: BenchRow) -> List[str]:
    status = "ok" if r.status == "ok" else f"error: {r.reason}"
    if r.status == "ok" and r.reason:
        status = f"ok ({r.reason})"
    return [r.name, r.backend, r.precision, str(r.batch), _fmt(r.p50_ms, ".2f"), _fmt(r.p90_ms, ".2f"),
            _fmt(r.p99_ms, ".2f"), _fmt(r.throughput, ".1f"), _fmt(r.cv, ".1f", 100), _fmt(r.gpu_p50_ms, ".3f"),
            "-" if r.speedup is None else f"{r.speedup:.2f}x", _fmt(r.top1, ".2f", 100),
            _fmt(r.agreement, ".2f", 100), _fmt(r.max_abs_diff, ".2e"),
            "-" if r.float_layers is None else str(len(r.float_layers)), status]


def accuracy_notes(rows: Sequence[BenchRow]) -> List[str]:
    """What the accuracy columns are measured on: one line per distinct image set of ``top-1 %`` and ``agree %``
    (naming the rows when the table mixes sets)."""
    out = []
    for col, attr in (("top-1 %", "eval_source"), ("agree % / max abs diff", "agreement_source")):
        groups: Dict[str, List[str]] = {}
        for r in rows:
            src = getattr(r, attr)
            if src:
                names = groups.setdefault(src, [])
                if r.name not in names:
                    names.append(r.name)
        what = "" if attr == "eval_source" else "vs the PyTorch logits stored in the bundle, "
        for src, names in groups.items():
            whose = "" if len(groups) == 1 else f" ({', '.join(names)})"
            out.append(f"{col}{whose}: {what}on {src}")
    return out


def _timing_note(rows: Sequence[BenchRow]) -> List[str]:
    out = accuracy_notes(rows)
    if any(r.backend == "tensorrt" for r in rows):
        out.append("TensorRT p50/p90/p99: end-to-end host time per call (H2D copy + compute + D2H copy + sync); "
                   "GPU ms: median GPU compute time of execute_async_v3 (CUDA events).")
    if any(r.speedup is not None for r in rows):
        out.append("vs torch: PyTorch eager p50 / this row's p50 at the same batch (> 1 = faster than PyTorch).")
    return out


def _float_layer_lines(rows: Sequence[BenchRow]) -> List[str]:
    """One line per int8 bundle: the layers pand-export kept in float and the agreement measured here."""
    out, seen = [], set()
    for r in rows:
        if r.float_layers is None or r.bundle in seen:
            continue
        seen.add(r.bundle)
        agree = "" if r.agreement is None else f" (agreement {r.agreement:.2%})"
        out.append(f"{r.name}: {len(r.float_layers)} layer(s) kept in float{agree}: "
                   f"{', '.join(r.float_layers) or 'none'}")
    return out


def render_text(rows: Sequence[BenchRow]) -> str:
    """The table as aligned plain text."""
    table = [list(_COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = _float_layer_lines(rows)
    if notes:
        lines += ["", "int8 layers kept in float:"] + [f"  {n}" for n in notes]
    lines += [""] + _timing_note(rows) if _timing_note(rows) else []
    return "\n".join(lines)


def render_markdown(rows: Sequence[BenchRow], header: Optional[Dict[str, Any]] = None) -> str:
    """The table as GitHub Markdown, preceded by the run's settings."""
    out = ["# pand-bench", ""]
    for k, v in (header or {}).items():
        out.append(f"- **{k}**: {v}")
    out += ["", "| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    notes = _float_layer_lines(rows)
    if notes:
        out += ["", "int8 layers kept in float:", ""] + [f"- {n}" for n in notes]
    timing = _timing_note(rows)
    if timing:
        out += [""] + timing
    return "\n".join(out) + "\n"
