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
sizes, timed by the ``pytorch`` plugin that the main ``pand`` distribution registers (:mod:`.bench_plugins`; the runtime
itself imports neither pand nor torch, and without the plugin ``--pytorch`` exits 2 naming what to install): eager, and
``torch.compile`` when it compiles here (a failure is a row that says why). Those rows are ``backend=pytorch``; every row then shows its p50 speedup over the PyTorch eager row of the same batch
(``vs torch``), and the PyTorch rows' agreement is against the logits stored in the bundle (the same student at
export time). TensorRT latencies are end-to-end host time per call (H2D copy + compute + D2H copy + sync); the
``GPU ms`` column is the median GPU compute time of ``execute_async_v3`` from CUDA events. Rows whose coefficient of
variation exceeds ``--cv-warn`` (5%) get a warning (trtexec warns above 2.5%); the header records the clocks and
power mode where readable (:func:`pand_runtime.device.clock_info`).

Exit status: 0 = ok; 1 = a regression (or nothing comparable) vs ``--compare``; 2 = bad arguments, an unreadable
``--compare`` file, or results that cannot be written (an output that would overwrite an input or lie inside a
bundle outside its ``bench/`` folder, or an unwritable location: :mod:`.bench_outputs`); 3 = every row failed.

This module runs the benchmark (:func:`run_bench`) and holds the command line; the parts live in
:mod:`.bench_rows` (options, table rows), :mod:`.bench_timing` (warm-up and timed runs, latency statistics),
:mod:`.bench_accuracy` (reference images, labelled folders), :mod:`.bench_report` (text and Markdown tables, CV
warnings) and :mod:`.bench_compare` (``--compare``); device identity is :mod:`.device`'s.

Example:
    pand-bench runs/tiny/export/onnx-fp32 runs/tiny/export/onnx-int8-cpu --batch 1 --batch 8 --threads 2
"""
from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Sequence

import click
import numpy as np

from .backends.ort_backend import GRAPH_OPTIMIZATION_LEVELS
from .bench_accuracy import measure_accuracy
from .bench_compare import compare_rows, read_baseline
from .bench_outputs import check_outputs
from .bench_plugins import PYTORCH_PLUGIN, require_plugin
from .bench_report import cv_warnings, render_markdown, render_text
from .bench_rows import BenchOptions, BenchRow, pytorch_error_rows, timing_options
from .bench_timing import measure
from .device import clock_info, cpu_model, device_key
from .errors import PandError
from .io import WriteError, atomic_write_text
from .manifest import BENCH_DIR, load_manifest
from .model_kinds import kind_of_backend
from .predictor import BACKENDS, Predictor
from .preprocess import normalize_u8

__all__ = ["bench_bundle", "bench_pytorch", "add_speedups", "run_bench", "main"]

EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_ALL_FAILED = 3


def bench_bundle(path: Path, opts: BenchOptions) -> List[BenchRow]:
    """Benchmark one bundle at every batch size of ``opts``; failures become rows with ``status='error'``."""
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
    mf = m.model(kind_of_backend(predictor.backend_name).format)
    base.model_sha256 = mf.sha256 if mf is not None else ""
    int8 = next((x.info["int8"] for x in m.models if isinstance(x.info.get("int8"), dict)), None)
    if int8 is not None:
        base.float_layers = [str(n) for n in int8.get("float_nodes") or []]
    base.details = {"device_key": device_key(predictor.backend.describe()), **predictor.backend.describe()}
    images_error = None
    try:
        measure_accuracy(predictor, base, opts)
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
    try:
        ref = predictor.reference()
    except PandError as e:  # a damaged reference.npz fails the bundle's rows (named), never the whole run
        predictor.close()
        return [BenchRow(**{**asdict(base), "batch": b, "status": "error", "reason": f"reference: {e}"})
                for b in opts.batches]
    pool = None
    if ref is not None and len(ref.get("images_u8", [])):
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


def bench_pytorch(run: Path, bundles: Sequence[Path], opts: BenchOptions) -> List[BenchRow]:
    """Rows for the PyTorch student of ``run`` (eager, then ``torch.compile``) on the first bundle's reference images
    and the same batch sizes. The timing lives on the torch side of pand, in the ``pytorch`` plugin the pand
    distribution registers (:mod:`.bench_plugins`), so the runtime itself never imports torch or pand; without torch
    every row is an error naming the extra.

    Raises:
        PluginMissing: the plugin is not installed (only pand-runtime is).
    """
    plugin = require_plugin(PYTORCH_PLUGIN, "--pytorch")
    try:
        return plugin.load()(Path(run), bundles, opts)
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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _cli():
    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
    @click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(1,), show_default=True,
                  help="Batch size to time (repeat for several).")
    @click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                  help="Runtime backend: auto = TensorRT for a bundle with an engine where TensorRT runs, else ONNX "
                       "Runtime.")
    @click.option("--providers", default=None, help="ONNX Runtime providers, comma-separated (cpu,cuda,tensorrt).")
    @click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                  help="ONNX Runtime intra-op threads (0 = auto).")
    @click.option("--graph-optimization", type=click.Choice(GRAPH_OPTIMIZATION_LEVELS), default="all",
                  show_default=True, help="ONNX Runtime graph optimization level.")
    @timing_options
    @click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
                  help="Labelled image folder (<dir>/<class name>/<images>): top-1 of every row (the PyTorch rows "
                       "too) on all its images instead of the bundle's parity images.")
    @click.option("--label-order", type=click.Choice(("names", "sorted")), default="names", show_default=True,
                  help="--images: match folders to the bundle's classes by name (an unmapped folder is an error), "
                       "or take the sorted folders as labels 0..C-1 (shown in the table).")
    @click.option("--pytorch", "pytorch_run", type=click.Path(exists=True), default=None,
                  help="A pand run directory (or student checkpoint): also time its PyTorch student (eager and "
                       "torch.compile) on the same images and batch sizes, with speedups vs PyTorch eager. Needs "
                       "the pand distribution (pip install 'pand[train]'), which registers these rows.")
    @click.option("--no-compile", is_flag=True, help="With --pytorch: skip the torch.compile rows.")
    @click.option("--cv-warn", type=click.FloatRange(min=0), default=0.05, show_default=True,
                  help="Warn when a row's latency coefficient of variation exceeds this (trtexec: 0.025).")
    @click.option("--output", "-o", "output", type=click.Path(file_okay=False), default=None,
                  help="Folder for pand-bench.json and pand-bench.md (default: the first bundle's bench/ sub-folder). "
                       "Nothing is written when every row failed.")
    @click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
                  help="Write the JSON results here instead (default: <output>/pand-bench.json).")
    @click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None,
                  help="Write the Markdown table here instead (default: <output>/pand-bench.md).")
    @click.option("--compare", "compare_path", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="A previous pand-bench JSON: exit 1 on a regression.")
    @click.option("--tolerance", type=float, default=0.15, show_default=True,
                  help="Allowed relative p50 slow-down vs --compare.")
    @click.option("--acc-tolerance", type=float, default=0.01, show_default=True,
                  help="Allowed top-1 drop (absolute) vs --compare.")
    def cli(bundles, batches, backend, providers, threads, graph_optimization, warmup_ms, iterations, min_time, images,
            label_order, pytorch_run, no_compile, cv_warn, output, json_path, md_path, compare_path, tolerance,
            acc_tolerance):
        """Benchmark exported bundles: latency percentiles, throughput, accuracy and agreement with PyTorch.

        BUNDLES are folders written by pand-export or pand-engine. Each bundle x --batch is one row: p50/p90/p99
        latency, images/s, top-1 (on the bundle's parity images, or on every image of --images) and top-1 agreement
        with the PyTorch logits stored in the bundle (on its parity images). --pytorch RUN adds the PyTorch student's
        rows on the same images. Results go to BUNDLE/bench/ (or --output DIR) as pand-bench.json and
        pand-bench.md; --compare BASELINE.json exits 1 on a regression.

        \b
        Examples:
          pand-bench runs/tiny/export/onnx-fp32
          pand-bench runs/tiny/export/onnx-fp32 --pytorch runs/tiny --images data/test --batch 1 --batch 8
          pand-bench runs/tiny/export/onnx-fp32 --compare runs/tiny/export/onnx-fp32/bench/pand-bench.json -o new
        """
        out_dir = Path(output) if output else Path(bundles[0]) / BENCH_DIR
        json_path = json_path or str(out_dir / "pand-bench.json")
        md_path = md_path or str(out_dir / "pand-bench.md")
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
        try:  # outputs never overwrite inputs and are writable, --pytorch has its plugin: checked before anything runs
            if pytorch_run:
                require_plugin(PYTORCH_PLUGIN, "--pytorch")
            check_outputs([("--json", Path(json_path)), ("--markdown", Path(md_path))], [Path(b) for b in bundles],
                          [Path(compare_path)] if compare_path else [], [Path(images)] if images else [])
        except PandError as e:
            raise click.UsageError(str(e)) from None
        opts = BenchOptions(batches=tuple(batches), backend=backend,
                            providers=[p for p in providers.split(",") if p] if providers else None, threads=threads,
                            graph_optimization=graph_optimization, warmup_ms=warmup_ms, iterations=iterations,
                            min_time=min_time, images=Path(images) if images else None, label_order=label_order,
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
        if rows and all(r.status != "ok" for r in rows):  # nothing measured: nothing written
            click.echo(f"pand-bench: every row failed ({len(rows)} of {len(rows)}); see the status column. Nothing "
                       f"was written", err=True)
            sys.exit(EXIT_ALL_FAILED)
        payload = {"header": header, "device_key": keys[0] if len(keys) == 1 else keys,
                   "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
                   "rows": [asdict(r) | {"key": r.key} for r in rows]}
        try:
            atomic_write_text(Path(json_path), json.dumps(payload, indent=2, default=str) + "\n")
            atomic_write_text(Path(md_path), render_markdown(rows, header))
        except WriteError as e:  # the location changed during the run: a user/environment error, no traceback
            click.echo(f"pand-bench: error: could not write {getattr(e, 'path', '')}: {getattr(e, 'reason', e)}. "
                       f"Choose a writable --json/--markdown path and rerun", err=True)
            sys.exit(EXIT_USAGE)
        click.echo(f"\nwrote {json_path} and {md_path}")
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
