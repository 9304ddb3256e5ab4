"""``pand-bench``: latency, throughput and accuracy of exported bundles, as a table that never crashes.

Method (trtexec / DEPLOY.md 4): per bundle and batch size, a warm-up of at least ``--warmup-ms`` (200 ms), then
timed runs until both ``--iterations`` runs and ``--min-time`` seconds are reached. Each run is one synchronous
``backend.run`` on a preprocessed float32 batch (model latency; image decoding and resizing are not timed). Reported:
p50/p90/p99 latency (ms), throughput (images/s = batch x runs / total time) and the coefficient of variation
(std / mean; trtexec warns above 2.5%).

Accuracy needs no torch: the bundle's ``reference.npz`` holds the parity images (already resized and cropped, uint8),
their labels and the PyTorch logits, so each row also reports top-1 accuracy (on those images, or on a labelled image
folder given with ``--images``), top-1 agreement and max |logit diff| against PyTorch. A row that fails says why and
the table still prints. ``--compare BASELINE.json`` exits 1 when a row is slower than ``(1 + --tolerance)`` times its
baseline p50, loses more than ``--acc-tolerance`` top-1, or fails where the baseline row passed.

Example:
    pand-bench runs/tiny/export/onnx-fp32 runs/tiny/export/onnx-int8-cpu --batch 1 --batch 8 --threads 2
"""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .device import cpu_model, device_key

__all__ = [
    "BenchOptions", "BenchRow", "measure", "latency_stats", "bench_bundle", "run_bench", "compare_rows",
    "render_markdown", "render_text", "device_key", "cpu_model", "load_image_folder", "main",
]

EXIT_REGRESSION = 1
EXIT_USAGE = 2


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
    details: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity used by ``--compare``: ``name/backend/precision/b<batch>``."""
        return f"{self.name}/{self.backend}/{self.precision}/b{self.batch}"


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
    from pand.errors import PandError

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
    base.details = {"device_key": device_key(predictor.backend.describe()), **predictor.backend.describe()}
    try:
        _accuracy(predictor, base, opts)
    except Exception as e:  # noqa: BLE001
        base.details["accuracy_error"] = f"{type(e).__name__}: {e}"
    rows = []
    s = predictor.spec.image_size
    ref = predictor.reference()
    pool = None
    if ref is not None and len(ref.get("images_u8", [])):
        from .preprocess import normalize_u8

        pool = normalize_u8(ref["images_u8"], predictor.spec)
    for b in opts.batches:
        row = BenchRow(**{**asdict(base), "batch": int(b), "details": dict(base.details)})
        try:
            fixed = predictor.backend.fixed_batch
            if fixed is not None and b != fixed:
                raise ValueError(f"the bundle has a static batch of {fixed} (export with --dynamic-batch)")
            if pool is not None:
                x = np.ascontiguousarray(np.resize(pool, (b, 3, s, s)).astype(np.float32))
            else:
                x = np.random.default_rng(0).standard_normal((b, 3, s, s)).astype(np.float32)
            samples = measure(lambda: predictor.backend.run(x), opts.warmup_ms, opts.iterations, opts.min_time)
            st = latency_stats(samples, b)
            row.p50_ms, row.p90_ms, row.p99_ms = st["p50_ms"], st["p90_ms"], st["p99_ms"]
            row.mean_ms, row.cv, row.throughput = st["mean_ms"], st["cv"], st["throughput"]
            row.iterations, row.seconds = len(samples), float(samples.sum() / 1000.0)
            if row.valid is False:
                row.reason = "bundle marked invalid by pand-export"
        except Exception as e:  # noqa: BLE001
            row.status, row.reason = "error", f"{type(e).__name__}: {e}"
        rows.append(row)
    predictor.close()
    return rows


def run_bench(bundles: Sequence[Path], opts: BenchOptions) -> List[BenchRow]:
    """:func:`bench_bundle` over several bundles, in order."""
    rows: List[BenchRow] = []
    for b in bundles:
        rows.extend(bench_bundle(Path(b), opts))
    return rows


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


_COLUMNS = ("bundle", "backend", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "CV %", "top-1 %",
            "agree %", "max abs diff", "status")


def _cells(r: BenchRow) -> List[str]:
    status = "ok" if r.status == "ok" else f"error: {r.reason}"
    if r.status == "ok" and r.reason:
        status = f"ok ({r.reason})"
    return [r.name, r.backend, r.precision, str(r.batch), _fmt(r.p50_ms, ".2f"), _fmt(r.p90_ms, ".2f"),
            _fmt(r.p99_ms, ".2f"), _fmt(r.throughput, ".1f"), _fmt(r.cv, ".1f", 100), _fmt(r.top1, ".2f", 100),
            _fmt(r.agreement, ".2f", 100), _fmt(r.max_abs_diff, ".2e"), status]


def render_text(rows: Sequence[BenchRow]) -> str:
    """The table as aligned plain text."""
    table = [list(_COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: Sequence[BenchRow], header: Optional[Dict[str, Any]] = None) -> str:
    """The table as GitHub Markdown, preceded by the run's settings."""
    out = ["# pand-bench", ""]
    for k, v in (header or {}).items():
        out.append(f"- **{k}**: {v}")
    out += ["", "| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    return "\n".join(out) + "\n"


def compare_rows(rows: Sequence[BenchRow], baseline: Dict[str, Any], tolerance: float = 0.15,
                 acc_tolerance: float = 0.01) -> List[str]:
    """Regressions of ``rows`` against a previous ``pand-bench`` JSON (``{"rows": [...]}``), one string each naming
    the row: p50 above ``(1 + tolerance) x`` baseline, top-1 more than ``acc_tolerance`` below, or a failure where
    the baseline row was ok. Rows absent from the baseline are not compared."""
    base = {BenchRow(**{k: v for k, v in r.items() if k in BenchRow.__dataclass_fields__}).key: r
            for r in baseline.get("rows", [])}
    out = []
    for r in rows:
        b = base.get(r.key)
        if b is None:
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
    return out


def _write(path: Path, text: str) -> None:
    from pand.utils.io import atomic_write_text

    atomic_write_text(path, text)


def _cli():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
    @click.option("--batch", "batches", type=int, multiple=True, default=(1,), show_default=True,
                  help="Batch size to time (repeat for several).")
    @click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto",
                  show_default=True)
    @click.option("--providers", default=None, help="ONNX Runtime providers, comma-separated (cpu,cuda,tensorrt).")
    @click.option("--threads", type=int, default=0, show_default=True, help="ONNX Runtime intra-op threads (0 = auto).")
    @click.option("--graph-optimization", type=click.Choice(["disable", "basic", "extended", "all"]), default="all",
                  show_default=True)
    @click.option("--warmup-ms", type=float, default=200.0, show_default=True)
    @click.option("--iterations", type=int, default=50, show_default=True, help="Minimum timed runs per row.")
    @click.option("--min-time", type=float, default=3.0, show_default=True, help="Minimum timed seconds per row.")
    @click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
                  help="Labelled image folder (<dir>/<class name>/<images>) for top-1 accuracy.")
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
            json_path, md_path, compare_path, tolerance, acc_tolerance):
        """Benchmark exported bundles: latency percentiles, throughput, accuracy and agreement with PyTorch."""
        opts = BenchOptions(batches=tuple(batches), backend=backend,
                            providers=[p for p in providers.split(",") if p] if providers else None, threads=threads,
                            graph_optimization=graph_optimization, warmup_ms=warmup_ms, iterations=iterations,
                            min_time=min_time, images=Path(images) if images else None)
        rows = run_bench([Path(b) for b in bundles], opts)
        keys = sorted({r.details.get("device_key") for r in rows if r.details.get("device_key")})
        header = {"device": ", ".join(keys) or "?", "cpu": cpu_model(), "warm-up ms": warmup_ms,
                  "min iterations": iterations, "min seconds": min_time, "python": platform.python_version()}
        click.echo(render_text(rows))
        payload = {"header": header, "device_key": keys[0] if len(keys) == 1 else keys,
                   "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
                   "rows": [asdict(r) | {"key": r.key} for r in rows]}
        _write(Path(json_path), json.dumps(payload, indent=2, default=str) + "\n")
        _write(Path(md_path), render_markdown(rows, header))
        click.echo(f"\nwrote {json_path} and {md_path}")
        if compare_path:
            baseline = json.loads(Path(compare_path).read_text())
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
