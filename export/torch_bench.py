"""``pand-bench --pytorch RUN``: the run's PyTorch student timed like a bundle (the torch side of pand-bench).

The runtime imports neither torch nor pand: the pand distribution registers :func:`time_pytorch_student` as the
``pytorch`` plugin of pand-bench (entry-point group ``pand_runtime.bench_plugins``, setup.cfg), which
:func:`pand_runtime.bench.bench_pytorch` loads only when ``--pytorch`` is given. The student runs on the first bundle's
reference images (the stored parity images, preprocessed with the bundle's own spec) at every batch size of the run,
eager and, when it compiles here, through ``torch.compile``; agreement is measured against the PyTorch logits stored in
the bundle. Top-1 is measured on the same images as the bundle rows: the parity images, or with ``--images`` every image
of that folder through the runtime's preprocessing.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import List, Sequence

import numpy as np

from pand_runtime.bench_accuracy import folder_top1, parity_source, reference_of
from pand_runtime.bench_rows import BenchOptions, BenchRow, pytorch_error_rows
from pand_runtime.bench_timing import measure
from pand_runtime.metrics import compare_logits
from pand_runtime.preprocess import normalize_u8, prepare_batch

__all__ = ["time_pytorch_student"]


def time_pytorch_student(run: Path, bundles: Sequence[Path], opts: BenchOptions) -> List[BenchRow]:
    """Rows ``backend=pytorch``, ``precision=fp32-eager|fp32-compile``, one per batch size; failures are error rows.

    Raises:
        ImportError: torch or pand's training stack is not installed (the caller turns it into error rows).
    """
    import torch  # imported here: a missing torch must reach the caller as ImportError, even after a first import

    from .source import load_source

    variants = ["eager"] + (["compile"] if opts.torch_compile else [])
    try:
        src = load_source(run)
    except Exception as e:  # noqa: BLE001 - a run that cannot be loaded is a row, not a crash
        return pytorch_error_rows(run, opts, f"load: {e}", variants)
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    ref, m = reference_of(bundles)
    spec = src.preprocess
    s = spec.image_size
    if ref is not None and m is not None and m.preprocess != spec:
        ref = None  # another preprocessing: the stored images are not this model's input
    pool = normalize_u8(ref["images_u8"], spec) if ref is not None else \
        np.random.default_rng(0).standard_normal((8, 3, s, s)).astype(np.float32)
    base = BenchRow(bundle=str(run), name=run.name, backend="pytorch", precision="fp32")
    rows: List[BenchRow] = []
    eager = src.model.eval()
    for variant in variants:
        vbase = BenchRow(**{**asdict(base), "precision": f"fp32-{variant}", "model_sha256": src.checkpoint_sha256})
        vbase.details = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu",
                         "checkpoint": str(src.checkpoint), "arch": src.arch}
        try:
            model = eager if variant == "eager" else torch.compile(eager, dynamic=False)

            def forward(x: np.ndarray, model=model) -> np.ndarray:
                with torch.inference_mode():
                    return model(torch.from_numpy(x)).numpy()

            if ref is not None:
                logits = np.concatenate([forward(np.ascontiguousarray(pool[i:i + 32]))
                                         for i in range(0, len(pool), 32)])
                labels = ref["labels"] if len(ref.get("labels", [])) else None
                res = compare_logits(ref["logits"], logits, labels)
                source = parity_source(m, res.n)
                vbase.agreement, vbase.max_abs_diff, vbase.agreement_source = res.top1_agreement, res.max_abs, source
                if labels is not None:
                    vbase.top1, vbase.n_eval, vbase.eval_source = res.acc_out, res.n, source
            if opts.images is not None:  # the bundle rows' top-1 images, through the same runtime preprocessing
                vbase.top1, vbase.n_eval, vbase.eval_source = folder_top1(
                    opts.images, src.class_names, lambda paths: forward(prepare_batch(paths, spec)), opts.label_order)
        except Exception as e:  # noqa: BLE001 - e.g. torch.compile without a C++ compiler
            what = "torch.compile failed" if variant == "compile" else "PyTorch failed"
            rows.extend(pytorch_error_rows(run, opts, f"{what}: {type(e).__name__}: "
                                                      f"{str(e).splitlines()[0] if str(e) else ''}", [variant]))
            continue
        for b in opts.batches:
            row = BenchRow(**{**asdict(vbase), "batch": int(b), "details": dict(vbase.details)})
            try:
                x = np.ascontiguousarray(np.resize(pool, (int(b), 3, s, s)).astype(np.float32))
                row.set_timing(measure(lambda: forward(x), opts.warmup_ms, opts.iterations, opts.min_time))
            except Exception as e:  # noqa: BLE001
                row.status, row.reason = "error", f"{type(e).__name__}: {e}"
            rows.append(row)
    return rows
