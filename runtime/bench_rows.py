"""The settings of a ``pand-bench`` run (:class:`BenchOptions`) and one line of its table (:class:`BenchRow`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .bench_timing import latency_stats

__all__ = ["BenchOptions", "BenchRow", "pytorch_error_rows", "timing_options"]


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
    label_order: str = "names"  # --images: folders matched to classes by name, or "sorted" (explicit opt-in)
    pytorch: Optional[Path] = None  # a pand run (or student checkpoint): also time its PyTorch student
    torch_compile: bool = True  # with pytorch: also a torch.compile row
    cv_warn: float = 0.05  # warn when a row's coefficient of variation exceeds this


def timing_options(command):
    """The click options of how one row is timed (trtexec's method: ``--warmup-ms`` of warm-up, then timed runs until
    ``--iterations`` runs and ``--min-time`` seconds are both reached), with :class:`BenchOptions`' defaults: one
    declaration for ``pand-bench`` and ``pand-sweep``. Imports click when applied."""
    import click

    d = BenchOptions()
    options = [
        click.option("--warmup-ms", type=click.FloatRange(min=0), default=d.warmup_ms, show_default=True,
                     help="Warm-up before each row is timed, in milliseconds."),
        click.option("--iterations", type=click.IntRange(min=1), default=d.iterations, show_default=True,
                     help="Minimum timed runs per row."),
        click.option("--min-time", type=click.FloatRange(min=0), default=d.min_time, show_default=True,
                     help="Minimum timed seconds per row."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


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
    top1: Optional[float] = None  # top-1 accuracy on eval_source (n_eval images)
    n_eval: int = 0
    eval_source: str = ""  # the images top1 is measured on; every row of one table uses the same images
    agreement: Optional[float] = None  # top-1 agreement with the PyTorch logits stored in the bundle
    max_abs_diff: Optional[float] = None
    agreement_source: str = ""  # the images agreement and max abs diff are measured on (the bundle's parity images)
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


def pytorch_error_rows(run: Path, opts: BenchOptions, reason: str,
                       variants: Optional[Sequence[str]] = None) -> List[BenchRow]:
    """One ``status=error`` row per PyTorch variant (``eager``, ``compile``) and batch size, saying ``reason``."""
    variants = variants or ["eager"] + (["compile"] if opts.torch_compile else [])
    return [BenchRow(bundle=str(run), name=Path(run).name, backend="pytorch", precision=f"fp32-{v}", batch=int(b),
                     status="error", reason=reason) for v in variants for b in opts.batches]
