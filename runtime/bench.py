"""``pand-bench``: latency, throughput and accuracy of exported bundles, as a table that never crashes.

Method (as trtexec; docs/deployment.md): per bundle and batch size, a warm-up of at least ``--warmup-ms`` (200 ms), then
timed runs until both ``--iterations`` runs and ``--min-time`` seconds are reached. Each run is one synchronous
``backend.run`` on a preprocessed float32 batch (model latency; image decoding and resizing are not timed). Reported:
p50/p90/p99 latency (ms), throughput (images/s = batch x runs / total time) and the coefficient of variation
(std / mean; trtexec warns above 2.5%).

Accuracy needs no torch: the bundle's ``reference.npz`` holds the parity images (already resized and cropped, uint8),
their labels and the PyTorch logits, so each row also reports top-1 accuracy (on those images, or on a labelled image
folder given with ``--images``), top-1 agreement and max |logit diff| against PyTorch. A row that fails says why and
the table still prints. ``--compare BASELINE.json`` exits 1 when a row is slower than ``(1 + --tolerance)`` times its
baseline p50, loses more than ``--acc-tolerance`` top-1, or fails where the baseline row passed, and also when no row
could be compared at all or a folder now holds a different model than in the baseline (rows are matched on the model
file's sha256, so a renamed folder still matches and a re-exported model never passes as "no regression"). The
baseline is read before anything runs and is never overwritten (``--json``/``--markdown`` may not name it).

``--pytorch RUN`` (where torch is installed) adds rows for the run's PyTorch student on the same images and batch
sizes, timed by :mod:`pand_export.torch_bench` (imported only then; the runtime itself never imports torch): eager, and
``torch.compile`` when it compiles here (a failure is a row that says why). Those rows are ``backend=pytorch``; every row then shows its p50 speedup over the PyTorch eager row of the same batch
(``vs torch``), and the PyTorch rows' agreement is against the logits stored in the bundle (the same student at
export time). TensorRT latencies are end-to-end host time per call (H2D copy + compute + D2H copy + sync); the
``GPU ms`` column is the median GPU compute time of ``execute_async_v3`` from CUDA events. Rows whose coefficient of
variation exceeds ``--cv-warn`` (5%) get a warning (trtexec warns above 2.5%); the header records the clocks and
power mode where readable (:func:`pand_runtime.device.clock_info`).

Exit status: 0 = ok; 1 = a regression (or nothing comparable) vs ``--compare``; 2 = bad arguments or an unreadable
``--compare`` file; 3 = every row failed.

Example:
    pand-bench runs/tiny/export/onnx-fp32 runs/tiny/export/onnx-int8-cpu --batch 1 --batch 8 --threads 2
"""
from __future__ import annotations

import json
import importlib
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .device import clock_info, cpu_model, device_key

__all__ = [
    "BenchOptions", "BenchRow", "measure", "latency_stats", "bench_bundle", "run_bench", "compare_rows",
    "render_markdown", "render_text", "device_key", "cpu_model", "load_image_folder", "bench_pytorch",
    "add_speedups", "cv_warnings", "main",
]

EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_ALL_FAILED = 3


@dataclass
class BenchOptions:
    """Settings of one ``pand-bench`` run."""

    batches: Sequence[int] = (1,)
    backend: str = "auto"
    providers: Optional[Sequence[str]] = None
    threads: int = 0
    graph_optimization: str = "all"
    warmup_ms: float = 200.0
    iterations: int = 50
    min_time: float = 3.0
    images: Optional[Path] = None  # labelled image folder: <dir>/<class name>/<image>
    pytorch: Optional[Path] = None  # a pand run (or student checkpoint): also time its PyTorch student
    torch_compile: bool = True  # with pytorch: also a torch.compile row
    cv_warn: float = 0.05  # warn when a row's coefficient of variation exceeds this


@dataclass
class BenchRow:
    """One line of the table (one bundle x batch size)."""

    bundle: str
    name: str
    backend: str = "?"
    precision: str = "?"
    batch: int = 1
    status: str = "ok"  # ok | error
    reason: str = ""
    valid: Optional[bool] = None  # the bundle's export parity verdict
    p50_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    cv: Optional[float] = None
    throughput: Optional[float] = None
    iterations: int = 0
    seconds: float = 0.0
    top1: Optional[float] = None
    n_eval: int = 0
    eval_source: str = ""
    agreement: Optional[float] = None
    max_abs_diff: Optional[float] = None
    model_sha256: str = ""  # sha256 of the model file the backend ran (from the manifest): what --compare matches on
    float_layers: Optional[List[str]] = None  # int8: the nodes pand-export kept in float (None: not an int8 bundle)
    timing: str = "host"  # what p50/p90/p99 measure: host (one synchronous call) | host end-to-end (TensorRT)
    gpu_p50_ms: Optional[float] = None  # TensorRT: median GPU compute time (CUDA events around execute_async_v3)
    speedup: Optional[float] = None  # PyTorch eager p50 / this p50 at the same batch (with --pytorch)
    details: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Readable row name: ``name/backend/precision/b<batch>`` (``--compare`` matches on :attr:`model_key` first)."""
        return f"{self.name}/{self.backend}/{self.precision}/b{self.batch}"

    @property
    def model_key(self) -> Optional[str]:
        """``<model sha256>/backend/precision/b<batch>``, or None when the model is unknown (the bundle failed to
        load)."""
        if not self.model_sha256:
            return None
        return f"{self.model_sha256}/{self.backend}/{self.precision}/b{self.batch}"

    def set_timing(self, samples_ms: np.ndarray) -> None:
        """Fill the latency columns from timed calls ``[n]`` (ms) of one batch of :attr:`batch` images."""
        st = latency_stats(samples_ms, self.batch)
        self.p50_ms, self.p90_ms, self.p99_ms = st["p50_ms"], st["p90_ms"], st["p99_ms"]
        self.mean_ms, self.cv, self.throughput = st["mean_ms"], st["cv"], st["throughput"]
        self.iterations, self.seconds = len(samples_ms), float(np.sum(samples_ms) / 1000.0)


def measure(fn: Callable[[], Any], warmup_ms: float = 200.0, iterations: int = 50,
            min_time: float = 3.0) -> np.ndarray:
    """Time ``fn``: warm up for at least ``warmup_ms`` (and one call), then run until both ``iterations`` calls and
    ``min_time`` seconds are reached. Returns each timed call's latency in ms, ``[n]``."""
    t_end = time.perf_counter() + warmup_ms / 1000.0
    fn()
    while time.perf_counter() < t_end:
        fn()
    samples: List[float] = []
    start = time.perf_counter()
    while len(samples) < iterations or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return np.asarray(samples, dtype=np.float64)


def latency_stats(samples_ms: np.ndarray, batch: int) -> Dict[str, float]:
    """p50/p90/p99/mean/std (ms), coefficient of variation ``std / mean`` and throughput
    ``batch * 1000 / mean`` (images/s) of latency samples ``[n]``."""
    s = np.asarray(samples_ms, dtype=np.float64)
    mean = float(s.mean())
    std = float(s.std(ddof=1)) if len(s) > 1 else 0.0
    return {"p50_ms": float(np.percentile(s, 50)), "p90_ms": float(np.percentile(s, 90)),
            "p99_ms": float(np.percentile(s, 99)), "mean_ms": mean, "std_ms": std, "cv": std / mean if mean else 0.0,
            "throughput": batch * 1000.0 / mean if mean else 0.0}


def load_image_folder(root: Path, class_names: Sequence[str]) -> tuple[List[Path], np.ndarray, str]:
    """Labelled images ``root/<class>/<file>``: ``(paths, labels, note)``.

    Folder names must equal the bundle's class names; if none do and there is one folder per class, the sorted
    folders are taken in label order (torchvision ImageFolder's convention) and ``note`` says so.
    """
    from .errors import PandError

    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
    dirs = sorted(d for d in Path(root).iterdir() if d.is_dir()) if Path(root).is_dir() else []
    if not dirs:
        raise PandError(f"--images {root}: expected class folders <dir>/<class name>/<images>")
    index = {c: i for i, c in enumerate(class_names)}
    note = "folder names = class names"
    if any(d.name in index for d in dirs):
        unknown = [d.name for d in dirs if d.name not in index]
        if unknown:
            raise PandError(f"--images {root}: folder(s) {unknown[:3]} are not classes of the bundle")
        mapping = {d: index[d.name] for d in dirs}
    elif len(dirs) == len(class_names):
        mapping = {d: i for i, d in enumerate(dirs)}
        note = "sorted folders in label order"
    else:
        raise PandError(f"--images {root}: {len(dirs)} folders match none of the bundle's {len(class_names)} classes")
    paths, labels = [], []
    for d, y in mapping.items():
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in exts:
                paths.append(p)
                labels.append(y)
    return paths, np.asarray(labels, dtype=np.int64), note


def _accuracy(predictor: Any, row: BenchRow, opts: BenchOptions) -> None:
    from .metrics import compare_logits
    from .preprocess import normalize_u8

    ref = predictor.reference()
    if ref is not None and len(ref.get("labels", [])):
        logits = predictor.run(normalize_u8(ref["images_u8"], predictor.spec))
        res = compare_logits(ref["logits"], logits, ref["labels"])
        row.agreement, row.max_abs_diff = res.top1_agreement, res.max_abs
        row.top1, row.n_eval, row.eval_source = res.acc_out, res.n, "bundle parity images (test split)"
        row.details["reference_top1"] = res.acc_ref
    if opts.images is not None:
        paths, labels, note = load_image_folder(opts.images, predictor.class_names)
        if not paths:
            from .errors import PandError

            raise PandError(f"--images {opts.images}: the class folders hold no images "
                            f"(.jpg, .jpeg, .png, .bmp, .webp, .tif, .tiff)")
        preds = np.concatenate([predictor.predict_logits([str(p) for p in paths[i:i + 32]]).argmax(1)
                                for i in range(0, len(paths), 32)])
        row.top1, row.n_eval = float(np.mean(preds == labels)), len(paths)
        row.eval_source = f"{opts.images} ({note})"


def bench_bundle(path: Path, opts: BenchOptions) -> List[BenchRow]:
    """Benchmark one bundle at every batch size of ``opts``; failures become rows with ``status='error'``."""
    from .manifest import load_manifest
    from .predictor import Predictor

    path = Path(path)
    base = BenchRow(bundle=str(path), name=path.name)
    try:
        m = load_manifest(path)
        base.precision = m.precision + (f"-{m.int8_target}" if m.int8_target else "")
        base.valid = m.valid
        predictor = Predictor.from_bundle(path, backend=opts.backend, providers=opts.providers, threads=opts.threads,
                                          graph_optimization=opts.graph_optimization, allow_invalid=True)
    except Exception as e:  # noqa: BLE001 - a broken bundle is a row, not a crash
        return [BenchRow(**{**asdict(base), "batch": b, "status": "error", "reason": f"load: {e}"})
                for b in opts.batches]
    base.backend = predictor.backend_name
    mf = m.model("onnx" if predictor.backend_name == "onnxruntime" else "tensorrt")
    base.model_sha256 = mf.sha256 if mf is not None else ""
    int8 = next((x.info["int8"] for x in m.models if isinstance(x.info.get("int8"), dict)), None)
    if int8 is not None:
        base.float_layers = [str(n) for n in int8.get("float_nodes") or []]
    base.details = {"device_key": device_key(predictor.backend.describe()), **predictor.backend.describe()}
    images_error = None
    try:
        _accuracy(predictor, base, opts)
    except Exception as e:  # noqa: BLE001 - shown in the table, never hidden in the JSON only
        base.details["accuracy_error"] = f"{type(e).__name__}: {e}"
        base.top1 = base.agreement = base.max_abs_diff = None
        base.n_eval, base.eval_source = 0, ""
        if opts.images is not None:  # the user asked for this accuracy: the row fails rather than show another one
            images_error = str(e) if str(e).startswith("--images") else f"--images {opts.images}: {e}"
        else:
            base.reason = f"no accuracy: {type(e).__name__}: {e}"
    rows = []
    s = predictor.spec.image_size
    ref = predictor.reference()
    pool = None
    if ref is not None and len(ref.get("images_u8", [])):
        from .preprocess import normalize_u8

        pool = normalize_u8(ref["images_u8"], predictor.spec)
    for b in opts.batches:
        row = BenchRow(**{**asdict(base), "batch": int(b), "details": dict(base.details)})
        if images_error is not None:
            row.status, row.reason = "error", images_error
            rows.append(row)
            continue
        try:
            if int(b) < 1:
                raise ValueError(f"batch {b}: the batch size must be >= 1")
            fixed = predictor.backend.fixed_batch
            if fixed is not None and b != fixed:
                raise ValueError(f"the bundle has a static batch of {fixed} (export with --dynamic-batch)")
            if pool is not None:
                x = np.ascontiguousarray(np.resize(pool, (b, 3, s, s)).astype(np.float32))
            else:
                x = np.random.default_rng(0).standard_normal((b, 3, s, s)).astype(np.float32)
            be = predictor.backend
            gpu_ms: List[float] = []
            if hasattr(be, "last_gpu_ms"):  # TensorRT: also the GPU compute time of each call
                row.timing = "host end-to-end (H2D + compute + D2H + sync)"

                def call():
                    be.run(x)
                    gpu_ms.append(be.last_gpu_ms)
            else:
                def call():
                    be.run(x)
            samples = measure(call, opts.warmup_ms, opts.iterations, opts.min_time)
            if gpu_ms:
                timed = [v for v in gpu_ms[-len(samples):] if v is not None]
                row.gpu_p50_ms = float(np.percentile(timed, 50)) if timed else None
            row.set_timing(samples)
            if row.valid is False:
                row.reason = "; ".join(x for x in ("bundle marked invalid by pand-export", row.reason) if x)
        except Exception as e:  # noqa: BLE001
            row.status, row.reason = "error", f"{type(e).__name__}: {e}"
        rows.append(row)
    predictor.close()
    return rows


def reference_of(bundles: Sequence[Path]) -> tuple[Optional[Dict[str, np.ndarray]], Any]:
    """The first bundle's ``reference.npz`` and manifest (the images every row is timed and judged on)."""
    from .manifest import REFERENCE_NAME, bundle_file, load_manifest

    for b in bundles:
        try:
            m = load_manifest(b)
            path = bundle_file(b, m.reference or REFERENCE_NAME, "reference")
            if path.is_file():
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}, m
        except Exception:  # noqa: BLE001 - a broken bundle is reported by its own row
            continue
    return None, None


def pytorch_error_rows(run: Path, opts: BenchOptions, reason: str,
                       variants: Optional[Sequence[str]] = None) -> List[BenchRow]:
    """One ``status=error`` row per PyTorch variant (``eager``, ``compile``) and batch size, saying ``reason``."""
    variants = variants or ["eager"] + (["compile"] if opts.torch_compile else [])
    return [BenchRow(bundle=str(run), name=Path(run).name, backend="pytorch", precision=f"fp32-{v}", batch=int(b),
                     status="error", reason=reason) for v in variants for b in opts.batches]


def bench_pytorch(run: Path, bundles: Sequence[Path], opts: BenchOptions) -> List[BenchRow]:
    """Rows for the PyTorch student of ``run`` (eager, then ``torch.compile``) on the first bundle's reference images
    and the same batch sizes. The timing lives on the torch side of pand (:mod:`pand_export.torch_bench`), imported only
    here, so the runtime itself never imports torch; without torch every row is an error naming the extra."""
    try:
        torch_bench = importlib.import_module("pand_export.torch_bench")
        return torch_bench.time_pytorch_student(Path(run), bundles, opts)
    except ImportError as e:
        return pytorch_error_rows(run, opts, f"--pytorch needs torch and pand's training stack ({e}): "
                                             f"pip install 'pand[train]'")


def add_speedups(rows: Sequence[BenchRow]) -> None:
    """Set each row's :attr:`BenchRow.speedup` = PyTorch eager p50 / its p50 at the same batch (when both exist)."""
    eager = {r.batch: r.p50_ms for r in rows
             if r.backend == "pytorch" and r.precision == "fp32-eager" and r.status == "ok" and r.p50_ms}
    for r in rows:
        if r.status == "ok" and r.p50_ms and eager.get(r.batch):
            r.speedup = eager[r.batch] / r.p50_ms


def cv_warnings(rows: Sequence[BenchRow], limit: float) -> List[str]:
    """One line per row whose latency coefficient of variation exceeds ``limit`` (trtexec warns above 2.5%)."""
    return [f"{r.key}: latency CV {r.cv:.1%} > {limit:.1%}: the timings are unstable (a busy machine, floating "
            f"clocks, thermal throttling); lock the clocks (nvidia-smi -lgc, or jetson_clocks on Jetson), close other "
            f"work and rerun" for r in rows if r.status == "ok" and r.cv is not None and r.cv > limit]


def run_bench(bundles: Sequence[Path], opts: BenchOptions) -> List[BenchRow]:
    """:func:`bench_pytorch` (with ``opts.pytorch``) then :func:`bench_bundle` over several bundles, in order."""
    rows: List[BenchRow] = []
    if opts.pytorch is not None:
        rows.extend(bench_pytorch(opts.pytorch, [Path(b) for b in bundles], opts))
    for b in bundles:
        rows.extend(bench_bundle(Path(b), opts))
    if opts.pytorch is not None:
        add_speedups(rows)
    return rows


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


def _timing_note(rows: Sequence[BenchRow]) -> List[str]:
    out = []
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


def _baseline_row(r: Dict[str, Any]) -> BenchRow:
    return BenchRow(**{k: v for k, v in r.items() if k in BenchRow.__dataclass_fields__ and k != "details"})


def _match(r: BenchRow, by_model: Dict[str, Dict[str, Any]], by_name: Dict[str, Dict[str, Any]],
           base_rows: Sequence[BenchRow]) -> Optional[Dict[str, Any]]:
    """The baseline row of ``r``: same model file (sha256), backend, precision and batch; else the row of the same
    folder name (a different model there is reported by the caller); a bundle that failed to load (backend and
    model unknown) matches the baseline row of its folder name, precision and batch."""
    if r.model_key is not None and r.model_key in by_model:
        return by_model[r.model_key]
    if r.key in by_name:
        return by_name[r.key]
    if r.status != "ok" and not r.model_sha256:
        for b in base_rows:
            if (b.name, b.precision, b.batch) == (r.name, r.precision, r.batch):
                return by_name[b.key]
    return None


def compare_rows(rows: Sequence[BenchRow], baseline: Dict[str, Any], tolerance: float = 0.15,
                 acc_tolerance: float = 0.01) -> List[str]:
    """Problems of ``rows`` against a previous ``pand-bench`` JSON (``{"rows": [...]}``), one string each naming
    the row: p50 above ``(1 + tolerance) x`` baseline, top-1 more than ``acc_tolerance`` below, a failure where
    the baseline row was ok, a folder that now holds a different model (sha256) than the baseline row, and, when no
    row of this run has a baseline row at all, one line saying that nothing was compared. Rows are matched on the
    model file's sha256 + backend + precision + batch (see :func:`_match`); rows without a baseline row are skipped
    as long as at least one row was compared."""
    raw = [r for r in baseline.get("rows", []) if isinstance(r, dict)]
    base_rows = [_baseline_row(r) for r in raw]
    by_model = {b.model_key: r for b, r in zip(base_rows, raw) if b.model_key is not None}
    by_name = {b.key: r for b, r in zip(base_rows, raw)}
    out = []
    compared = 0
    for r in rows:
        b = _match(r, by_model, by_name, base_rows)
        if b is None:
            continue
        compared += 1
        if r.model_sha256 and b.get("model_sha256") and b["model_sha256"] != r.model_sha256:
            out.append(f"{r.key}: a different model than in the baseline (sha256 {r.model_sha256[:12]} vs "
                       f"{str(b['model_sha256'])[:12]}); latency and accuracy are not comparable: record a new "
                       f"baseline for this model")
            continue
        if r.status != "ok":
            if b.get("status") == "ok":
                out.append(f"{r.key}: failed ({r.reason}) but passed in the baseline")
            continue
        if b.get("p50_ms") and r.p50_ms is not None and r.p50_ms > b["p50_ms"] * (1 + tolerance):
            out.append(f"{r.key}: p50 {r.p50_ms:.2f} ms vs baseline {b['p50_ms']:.2f} ms "
                       f"(+{r.p50_ms / b['p50_ms'] - 1:.0%} > {tolerance:.0%})")
        if b.get("top1") is not None and r.top1 is not None and r.top1 < b["top1"] - acc_tolerance:
            out.append(f"{r.key}: top-1 {r.top1:.2%} vs baseline {b['top1']:.2%} (drop > {acc_tolerance:.2%})")
    if rows and not compared:
        have = ", ".join(sorted(b.key for b in base_rows)[:4]) or "none"
        out.append(f"no row of this run matches a row of the baseline (this run: "
                   f"{', '.join(r.key for r in rows[:4])}; baseline: {have}): nothing was compared. Benchmark the "
                   f"same bundles, backend and batch sizes, or record a new baseline")
    return out


def read_baseline(path: Path) -> Dict[str, Any]:
    """A previous ``pand-bench`` JSON, checked: an object with a ``rows`` list. Raises :class:`PandError`."""
    from .errors import PandError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PandError(f"--compare {path} is not a readable pand-bench JSON file ({type(e).__name__}: {e}). Pass the "
                        f"--json file of an earlier pand-bench run") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise PandError(f"--compare {path} is JSON but not a pand-bench result (no 'rows' list). Pass the --json file "
                        f"of an earlier pand-bench run")
    return data


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _write(path: Path, text: str) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, text)


def _cli():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
    @click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(1,), show_default=True,
                  help="Batch size to time (repeat for several).")
    @click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto",
                  show_default=True)
    @click.option("--providers", default=None, help="ONNX Runtime providers, comma-separated (cpu,cuda,tensorrt).")
    @click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                  help="ONNX Runtime intra-op threads (0 = auto).")
    @click.option("--graph-optimization", type=click.Choice(["disable", "basic", "extended", "all"]), default="all",
                  show_default=True)
    @click.option("--warmup-ms", type=click.FloatRange(min=0), default=200.0, show_default=True)
    @click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True,
                  help="Minimum timed runs per row.")
    @click.option("--min-time", type=click.FloatRange(min=0), default=3.0, show_default=True,
                  help="Minimum timed seconds per row.")
    @click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
                  help="Labelled image folder (<dir>/<class name>/<images>) for top-1 accuracy.")
    @click.option("--pytorch", "pytorch_run", type=click.Path(exists=True), default=None,
                  help="A pand run directory (or student checkpoint): also time its PyTorch student (eager and "
                       "torch.compile) on the same images and batch sizes, with speedups vs PyTorch eager. Needs torch.")
    @click.option("--no-compile", is_flag=True, help="With --pytorch: skip the torch.compile rows.")
    @click.option("--cv-warn", type=click.FloatRange(min=0), default=0.05, show_default=True,
                  help="Warn when a row's latency coefficient of variation exceeds this (trtexec: 0.025).")
    @click.option("--json", "json_path", type=click.Path(dir_okay=False), default="pand-bench.json",
                  show_default=True)
    @click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default="pand-bench.md",
                  show_default=True)
    @click.option("--compare", "compare_path", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="A previous pand-bench JSON: exit 1 on a regression.")
    @click.option("--tolerance", type=float, default=0.15, show_default=True,
                  help="Allowed relative p50 slow-down vs --compare.")
    @click.option("--acc-tolerance", type=float, default=0.01, show_default=True,
                  help="Allowed top-1 drop (absolute) vs --compare.")
    def cli(bundles, batches, backend, providers, threads, graph_optimization, warmup_ms, iterations, min_time, images,
            pytorch_run, no_compile, cv_warn, json_path, md_path, compare_path, tolerance, acc_tolerance):
        """Benchmark exported bundles: latency percentiles, throughput, accuracy and agreement with PyTorch."""
        from .errors import PandError

        baseline = None
        if compare_path:  # read (and check) the baseline before anything runs or is written
            for opt, out_path in (("--json", json_path), ("--markdown", md_path)):
                if _same_file(Path(out_path), Path(compare_path)):
                    raise click.UsageError(f"{opt} {out_path} is the --compare baseline; the results would overwrite "
                                           f"it. Write them elsewhere, e.g. {opt} pand-bench-new"
                                           f"{Path(out_path).suffix}")
            try:
                baseline = read_baseline(Path(compare_path))
            except PandError as e:
                raise click.UsageError(str(e)) from None
        opts = BenchOptions(batches=tuple(batches), backend=backend,
                            providers=[p for p in providers.split(",") if p] if providers else None, threads=threads,
                            graph_optimization=graph_optimization, warmup_ms=warmup_ms, iterations=iterations,
                            min_time=min_time, images=Path(images) if images else None,
                            pytorch=Path(pytorch_run) if pytorch_run else None, torch_compile=not no_compile,
                            cv_warn=cv_warn)
        rows = run_bench([Path(b) for b in bundles], opts)
        keys = sorted({r.details.get("device_key") for r in rows if r.details.get("device_key")})
        header = {"device": ", ".join(keys) or "?", "cpu": cpu_model(), "warm-up ms": warmup_ms,
                  "min iterations": iterations, "min seconds": min_time, "python": platform.python_version()}
        header.update({f"clock {k}": v for k, v in clock_info().items()})
        click.echo(render_text(rows))
        unstable = cv_warnings(rows, cv_warn)
        for w in unstable:
            click.echo(f"warning: {w}", err=True)
        header["unstable rows (CV)"] = len(unstable)
        payload = {"header": header, "device_key": keys[0] if len(keys) == 1 else keys,
                   "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
                   "rows": [asdict(r) | {"key": r.key} for r in rows]}
        _write(Path(json_path), json.dumps(payload, indent=2, default=str) + "\n")
        _write(Path(md_path), render_markdown(rows, header))
        click.echo(f"\nwrote {json_path} and {md_path}")
        if rows and all(r.status != "ok" for r in rows):
            click.echo(f"pand-bench: every row failed ({len(rows)} of {len(rows)}); see the status column", err=True)
            sys.exit(EXIT_ALL_FAILED)
        if baseline is not None:
            if baseline.get("device_key") != payload["device_key"]:
                click.echo(f"warning: baseline device {baseline.get('device_key')} != this device "
                           f"{payload['device_key']}; latencies are not comparable across machines", err=True)
            regressions = compare_rows(rows, baseline, tolerance, acc_tolerance)
            if regressions:
                click.echo(f"REGRESSION vs {compare_path}:", err=True)
                for r in regressions:
                    click.echo(f"  - {r}", err=True)
                sys.exit(EXIT_REGRESSION)
            click.echo(f"no regression vs {compare_path} (tolerance {tolerance:.0%})")

    return cli


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point ``pand-bench``."""
    _cli().main(args=list(argv) if argv is not None else None, prog_name="pand-bench")


if __name__ == "__main__":
    main()
