"""Benchmark: INT8 agreement and latency of a trained student, per quantization setting, and accuracy-aware INT8.

On one run directory (default ``runs/demo/pand``, the demo's PAND student), with the export's own data (parity =
a seeded selection of the TEST split, calibration = a seeded selection of the TRAINING split, the eval transform):

1. **Settings study** (issue 18 item 1): plain INT8 (classifier head in float) for every calibration method x
   calibration image count x ``reduce_range`` off/on: top-1 agreement with PyTorch, test top-1, p50 latency at batch 1
   (ONNX Runtime CPU provider).
2. **Acceptance table**: fp32 ONNX / plain INT8 (the export's defaults) / accuracy-aware INT8 (the default
   ``pand-export --precision int8``): agreement, top-1, p50 and the layers kept in float, plus the p50 ratio to fp32.
   The three p50s are timed in interleaved rounds (a shared machine's load drifts over all three alike); the
   study's p50s are timed one model after the other and are only indicative.

The CPU model and its int8-relevant features are printed first: agreement and latency of INT8 depend on the CPU's
int8 kernels (VNNI/AMX vs AVX2, see :mod:`pand_runtime.int8_check`), so compare numbers from one machine kind only.

    python bench/int8.py runs/demo/pand                       # the full study (minutes on 2 cores)
    python bench/int8.py runs/demo/pand --quick               # minmax/percentile, 128 images, no entropy
    python bench/int8.py RUN --target tensorrt --skip-study   # the symmetric TensorRT flavour's acceptance table
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _inputs(images, spec) -> np.ndarray:
    from pand.data.transforms import create_transform
    from pand_export.data import iter_batches

    t = create_transform(spec, is_train=False)
    return np.concatenate([x.numpy().astype(np.float32) for _, x in iter_batches(images, t, 16)])


def _row(name: str, logits: np.ndarray, ref: np.ndarray, labels: np.ndarray, p50: float,
         float_nodes: Optional[List[str]] = None, **extra: Any) -> Dict[str, Any]:
    from pand_runtime.metrics import compare_logits

    r = compare_logits(ref, logits, labels)
    return {"model": name, "agreement": r.top1_agreement, "top1": r.acc_out, "top1_torch": r.acc_ref,
            "mean_cosine": r.mean_cosine, "p50_ms": p50, "float_layers": list(float_nodes or []), **extra}


def _interleaved_p50(paths: List[Path], x1: np.ndarray, threads: int, rounds: int = 7, runs: int = 15) -> List[float]:
    """Batch-1 median latency (ms) of each model, timed in interleaved rounds so that a shared machine's load
    drifts over all of them alike."""
    from pand_export.int8_search import _session

    sessions = [_session(p, threads) for p in paths]
    feeds = [{s.get_inputs()[0].name: x1} for s in sessions]
    for s, f in zip(sessions, feeds):
        for _ in range(3):
            s.run(None, f)
    samples: List[List[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, f)
                samples[i].append((time.perf_counter() - t0) * 1000.0)
    return [float(np.median(v)) for v in samples]


def _md(rows: List[Dict[str, Any]], cols: List[str], fp32_p50: Optional[float] = None) -> str:
    def cell(r: Dict[str, Any], c: str) -> str:
        v = r.get(c)
        if c in ("agreement", "top1"):
            return "-" if v is None else f"{100 * v:.2f}"
        if c == "p50_ms":
            return f"{v:.2f}" + (f" ({v / fp32_p50:.2f}x)" if fp32_p50 else "")
        if c == "float_layers":
            return ", ".join(v) if v else "-"
        return str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", nargs="?", default="runs/demo/pand", help="run directory or student checkpoint")
    ap.add_argument("--target", choices=["cpu", "tensorrt"], default="cpu")
    ap.add_argument("--methods", default="minmax,entropy,percentile")
    ap.add_argument("--calib-images", default="64,128,256", help="comma-separated calibration image counts")
    ap.add_argument("--parity-images", type=int, default=0, help="test images (0 = the whole test split)")
    ap.add_argument("--min-agreement", type=float, default=0.99)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="minmax + percentile, 128 calibration images")
    ap.add_argument("--skip-study", action="store_true", help="only the acceptance table")
    ap.add_argument("--json", type=Path, default=None, help="also write all rows here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    logging.getLogger("pand.export").setLevel(logging.INFO)

    import torch

    from pand_export.data import load_split_images
    from pand_export.int8_search import accuracy_aware_int8, p50_latency_ms, run_onnx
    from pand_export.onnx_export import torch_to_onnx
    from pand_export.quantize import Int8Quantizer
    from pand_export.source import load_source
    from pand_runtime.int8_check import validated_cpu
    from pand_runtime.metrics import TOLERANCES

    import dataclasses

    methods = ["minmax", "percentile"] if args.quick else [m for m in args.methods.split(",") if m]
    counts = [128] if args.quick else [int(c) for c in args.calib_images.split(",") if c]
    src = load_source(Path(args.run))
    cpu = validated_cpu()
    print(f"CPU: {cpu['model_name']}; int8 kernels: {cpu['int8_path']}; features: {' '.join(cpu['features'])}")
    test = load_split_images(src.cfg, "test", args.parity_images, args.seed, src.class_names)
    x_test, labels = _inputs(test, src.preprocess), test.labels
    with torch.no_grad():
        ref = np.concatenate([src.model(torch.from_numpy(x_test[i:i + 32])).numpy() for i in range(0, len(x_test), 32)])
    train_all = {n: _inputs(load_split_images(src.cfg, "train", n, args.seed, src.class_names), src.preprocess)
                 for n in sorted(set(counts + [256]))}
    print(f"run {args.run}: {src.arch}, {len(x_test)} test images, torch top-1 {np.mean(ref.argmax(1) == labels):.2%}")
    tmp = Path(tempfile.mkdtemp(prefix="pand-int8-bench-"))
    fp32 = tmp / "fp32.onnx"
    torch_to_onnx(src.model, fp32, src.preprocess.image_size, batch=1, dynamic=True)
    x1 = x_test[:1]
    fp32_p50 = p50_latency_ms(fp32, x1, args.threads, iterations=50, min_time=1.0)
    fp32_row = _row("fp32", run_onnx(fp32, x_test, args.threads), ref, labels, fp32_p50)
    rows: List[Dict[str, Any]] = []
    if not args.skip_study:
        print(f"\n## Settings study ({args.target} flavour, plain INT8, head in float)\n")
        for method in methods:
            for n in counts:
                for rr in (False, True):
                    t0 = time.perf_counter()
                    with Int8Quantizer(fp32, [train_all[n][i:i + 8] for i in range(0, n, 8)], target=args.target,
                                       method=method, reduce_range=rr) as q:
                        out = tmp / "q.onnx"
                        q.quantize(out, q.head_nodes)
                        r = _row(f"{method}/{n}/rr={int(rr)}", run_onnx(out, x_test, args.threads), ref, labels,
                                 p50_latency_ms(out, x1, args.threads, iterations=50, min_time=1.0),
                                 method=method, calib_images=len(train_all[n]), reduce_range=rr)
                    r["seconds"] = round(time.perf_counter() - t0, 1)
                    rows.append(r)
                    print(f"  {r['model']:<22} agreement {100 * r['agreement']:6.2f}%  top-1 {100 * r['top1']:6.2f}%"
                          f"  p50 {r['p50_ms']:6.2f} ms  ({r['seconds']}s)", flush=True)
        print()
        print(_md([fp32_row] + rows, ["model", "agreement", "top1", "p50_ms"], fp32_p50))
    # acceptance table: the export's defaults
    tol = dataclasses.replace(TOLERANCES["int8"], min_agreement=args.min_agreement)
    n = 256  # the export's default --calib-images
    calib = [train_all[n][i:i + 8] for i in range(0, n, 8)]
    with Int8Quantizer(fp32, calib, target=args.target, method="minmax") as q:
        plain = tmp / "plain.onnx"
        q.quantize(plain, q.head_nodes)
        plain_row = _row("plain int8", run_onnx(plain, x_test, args.threads), ref, labels,
                         p50_latency_ms(plain, x1, args.threads, iterations=50, min_time=1.0), q.head_nodes)
        aware = tmp / "aware.onnx"
        t0 = time.perf_counter()
        recipe, report = accuracy_aware_int8(q, aware, x_test, ref, labels, tol, q.head_nodes, threads=args.threads)
        aware_row = _row("accuracy-aware int8", run_onnx(aware, x_test, args.threads), ref, labels,
                         p50_latency_ms(aware, x1, args.threads, iterations=50, min_time=1.0), list(recipe.float_nodes),
                         search_seconds=round(time.perf_counter() - t0, 1), search_steps=report["steps"])
    p50s = _interleaved_p50([fp32, plain, aware], np.ascontiguousarray(x1), args.threads)
    for r, v in zip((fp32_row, plain_row, aware_row), p50s):
        r["p50_ms"] = v
    fp32_p50 = p50s[0]
    print(f"\n## {args.target} flavour: fp32 / plain INT8 / accuracy-aware INT8 (target {args.min_agreement:.2%}; "
          f"minmax, {len(train_all[n])} calibration images, reduce_range={recipe.reduce_range}, head in float)\n")
    print("search steps: " + "; ".join(f"{s['n_float']} float: {100 * s['agreement']:.2f}%"
                                       + (f" {s['p50_ms']:.2f} ms" if s['p50_ms'] else "") for s in report["steps"]))
    print()
    print(_md([fp32_row, plain_row, aware_row], ["model", "agreement", "top1", "p50_ms", "float_layers"], fp32_p50))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "run": str(args.run), "target": args.target,
                                         "study": rows, "table": [fp32_row, plain_row, aware_row]}, indent=2,
                                        default=str) + "\n")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
