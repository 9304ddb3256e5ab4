"""``pand-sweep``: the command line of :mod:`pand.sweep.run` (thin; all work lives there).

Exit status: 0 = the sweep finished (and, with ``--budget-ms``, a bundle meets the budget); 2 = bad input (unknown
student, a student whose input size does not fit, a budget no bundle meets, a failed training).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from pand.errors import PandError
from pand_runtime.bench_rows import timing_options

from .run import SweepOptions

EXIT_USAGE = 2
DEFAULTS = SweepOptions(config="")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True})
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--students", required=True,
              help="Comma-separated students: registered names (resnet18, resnet34, mobilenet_v2, mobilenet_v3_small, "
                   "mobilenet_v3_large, efficientnet_b0, ...), timm/<name> with timm installed, or 'all' (every "
                   "registered student whose input size fits the data).")
@click.option("--precisions", default=DEFAULTS.precisions, show_default=True,
              help="Comma-separated export precisions (fp32, fp16, int8; int8 is the CPU flavour on ONNX Runtime).")
@click.option("--budget-ms", type=float, default=None,
              help="Latency budget (p50 at --batch): recommend the most accurate bundle on VALIDATION top-1 within it.")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULTS.batch, show_default=True,
              help="Batch size of the latency (p50/p99) and of the budget.")
@click.option("--max-batch", type=click.IntRange(min=1), default=DEFAULTS.max_batch, show_default=True,
              help="The bundles' largest batch, where the throughput is measured.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULTS.run_dir,
              show_default=True, help="The sweep directory (resumable: finished steps are reused).")
@click.option("--threads", type=click.IntRange(min=0), default=DEFAULTS.threads, show_default=True,
              help="ONNX Runtime intra-op threads for the benchmark and the accuracy runs (0 = auto).")
@click.option("--calib-images", type=click.IntRange(min=1), default=DEFAULTS.calib_images, show_default=True,
              help="int8 calibration images (from the training split).")
@click.option("--parity-images", type=click.IntRange(min=0), default=DEFAULTS.parity_images, show_default=True,
              help="pand-export's parity images (test split; 0 = all).")
@click.option("--export-args", default="", help="Extra pand-export options for every bundle, e.g. '--plain-int8'.")
@timing_options  # pand-bench's own --warmup-ms, --iterations, --min-time
@click.option("--plot-split", type=click.Choice(["val", "test"]), default=DEFAULTS.plot_split, show_default=True,
              help="The accuracy on pareto.png (the front and the recommendation always use validation).")
def cli(config, overrides, students, precisions, budget_ms, batch, max_batch, run_dir, threads, calib_images,
        parity_images, export_args, warmup_ms, iterations, min_time, plot_split):
    """Train, export and benchmark several students with one teacher and one set of Stage PSC anchors, and pick the
    most accurate one for a latency budget.

    CONFIG and OVERRIDES are pand-train's (key=value, group=name). Stage PSC runs once; each student gets Stage NSD
    with the config's recipe, pand-export per precision and pand-bench on this machine's backend (ONNX Runtime CPU;
    TensorRT when present). Writes sweep.json, sweep.md and pareto.png into --run-dir. A second invocation reuses
    every finished step; an interrupted one continues where it stopped.

    \b
    Examples:
      pand-sweep configs/demo.yaml --students resnet18,mobilenet_v2,mobilenet_v3_small,efficientnet_b0
      pand-sweep configs/demo.yaml --students resnet18,mobilenet_v3_small --precisions fp32,int8 \\
          --budget-ms 2 --batch 1 --run-dir runs/sweep
      pand-sweep configs/tiny.yaml --students all --precisions fp32 nsd.epochs=1
    """
    from .run import run_sweep

    opts = SweepOptions(config=config, overrides=tuple(overrides), students=students, precisions=precisions,
                        budget_ms=budget_ms, batch=batch, max_batch=max_batch, run_dir=run_dir, threads=threads,
                        calib_images=calib_images, parity_images=parity_images,
                        export_args=tuple(shlex.split(export_args)), warmup_ms=warmup_ms, iterations=iterations,
                        min_time=min_time, plot_split=plot_split)
    try:
        run_sweep(opts, say=click.echo)
    except (PandError, FileNotFoundError) as e:
        click.echo(f"pand-sweep: error: {e}", err=True)
        sys.exit(EXIT_USAGE)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point ``pand-sweep``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="pand-sweep")


if __name__ == "__main__":
    main()
