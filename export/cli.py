"""``pand-export``: the command line of :mod:`pand_export.exporter` (thin; all work lives there).

Exit status: 0 = a valid bundle was written; 1 = the bundle was written but failed its parity check (``valid:
false`` in manifest.json); 2 = bad input or environment (nothing written).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from pand.config import ConfigError
from pand.errors import PandError
from pand_runtime.cli_options import tf32_option, timing_cache_option, workspace_option
from pand_runtime.console import report_parity, setup_logging

from .exporter import EXPORT_FORMATS, FORMAT_CHOICES, PRECISIONS, ExportOptions, check_format_options, export_bundle
from .onnx_export import EXPORTERS
from .quantize import CALIB_METHODS, INT8_TARGETS

EXIT_USAGE = 2
DEFAULTS = ExportOptions()  # every option's default is the ExportOptions field's


def _fail(msg: str) -> None:
    click.echo(f"pand-export: error: {msg}", err=True)
    sys.exit(EXIT_USAGE)


def _setup_logging() -> None:
    setup_logging("pand.export")


class CountOrDir(click.ParamType):
    """``--calib-images``: a number of images (int) or an existing folder of images (Path)."""

    name = "N|DIR"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, Path)):
            return value
        text = str(value)
        if text.isdigit():
            return int(text)
        if Path(text).is_dir():
            return Path(text)
        self.fail(f"{text}: give a number of training images or an existing folder of images", param, ctx)


def next_step_hint(m, bundle: Path) -> str:
    """The line about TensorRT that fits the bundle: none when it has an engine; for an int8 bundle of the CPU flavour
    (which pand-engine refuses) how to get the TensorRT one; else how to build the engine on the device."""
    if any(x.format == "tensorrt" for x in m.models):
        return ""
    if m.precision == "int8" and m.int8_target != "tensorrt":
        return (f"int8 for the ONNX Runtime CPU provider (--target {m.int8_target}); TensorRT needs the other flavour: "
                f"pand-export RUN --precision int8 --target tensorrt, then pand-engine on the device")
    return f"TensorRT: copy the bundle to the device and run pand-engine {bundle.name} there"


def _format_help() -> str:
    rows = "; ".join(f"{f.name}: {f.description} ({f.file})" for f in EXPORT_FORMATS)
    return f"{rows}; all: every format."


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(exists=True))
@click.option("--format", "format", type=click.Choice(FORMAT_CHOICES), default=DEFAULTS.format, show_default=True,
              help=_format_help())
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULTS.precision, show_default=True,
              help="fp16 and int8 are ONNX-level conversions (fp16 keeps fp32 inputs/outputs; int8 = QDQ).")
@click.option("--target", type=click.Choice(INT8_TARGETS), default=DEFAULTS.target,
              help="INT8 flavour: cpu = asymmetric uint8 activations (fast on the ORT CPU provider); tensorrt = "
                   "symmetric int8 (what TensorRT needs). Default: tensorrt when building an engine, else cpu.")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULTS.batch, show_default=True,
              help="Static batch size, or the TensorRT profile's optimal batch with a dynamic batch.")
@click.option("--dynamic-batch/--static-batch", default=DEFAULTS.dynamic_batch, show_default=True,
              help="Symbolic batch axis (any batch up to --max-batch) or a batch fixed to --batch.")
@click.option("--max-batch", type=click.IntRange(min=1), default=DEFAULTS.max_batch, show_default=True,
              help="Largest batch (TensorRT profile max; the runtime splits larger inputs).")
@click.option("--opset", type=int, default=DEFAULTS.opset, show_default=True, help="ONNX opset (<= 18 recommended).")
@click.option("--calib-images", "calib_images", type=CountOrDir(), default=DEFAULTS.calib_images, show_default=True,
              help="INT8 calibration: N images drawn (seeded) from the run's TRAINING split (never test), or a folder "
                   "DIR of images to calibrate on instead (searched recursively; no labels needed).")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the run's dataset is now (replaces data.root of the run's config.yaml: the dataset moved, "
                   "or another machine). fp32/fp16 export works without the dataset (parity on random images).")
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), default=DEFAULTS.calib_method, show_default=True,
              help="INT8 calibration method.")
@click.option("--quantize-head/--float-head", default=DEFAULTS.quantize_head, show_default=True,
              help="INT8: also quantize the final classifier layer (default keeps it in float: tiny, and the most "
                   "precision-sensitive layer).")
@click.option("--accuracy-aware/--plain-int8", default=DEFAULTS.accuracy_aware, show_default=True,
              help="INT8: measure each layer's sensitivity and keep the most sensitive ones in float, fewest first, "
                   "until the parity images meet --min-agreement (the layers, agreement and latency of every step "
                   "go to the manifest); --plain-int8 quantizes everything but the head, once.")
@click.option("--max-float-units", type=click.IntRange(min=0), default=DEFAULTS.max_float_units,
              help="INT8 accuracy-aware: the most fallback units (an activation and the layers around it) kept in "
                   "float (default: no limit).")
@click.option("--reduce-range/--no-reduce-range", default=DEFAULTS.reduce_range,
              help="INT8: 7-bit weights, for x86 CPUs without VNNI (AVX2 only) whose u8s8 kernels can saturate. "
                   "Default: on for --target cpu when this CPU is such a CPU, else off (on CPUs with VNNI/AMX it "
                   "only costs agreement, see bench/int8.py).")
@click.option("--parity-images", type=click.IntRange(min=0), default=DEFAULTS.parity_images, show_default=True,
              help="Held-out TEST images for the parity check (0 = the whole test split).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=DEFAULTS.output,
              help="Bundle directory (default <run>/export/<format>-<precision>[-<target>]).")
@click.option("--simplify/--no-simplify", default=DEFAULTS.simplify, show_default=True,
              help="Run onnxslim on the fp32 graph.")
@click.option("--exporter", type=click.Choice(EXPORTERS), default=DEFAULTS.exporter, show_default=True,
              help="torch.onnx exporter: torchscript (dynamo=False) or dynamo (torch.export).")
@workspace_option()
@timing_cache_option("under the run's cache_dir")
@tf32_option("fp32 TensorRT engine: keep TensorRT's TF32 convolutions (faster on Ampere+ / Jetson Orin, logits "
             "differ from PyTorch by ~1e-3, so the parity gate is max |diff| 1e-2, recorded in the manifest). "
             "Default: TF32 cleared, strict fp32 gate.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=DEFAULTS.min_agreement,
              help="Override the precision's minimum top-1 agreement with PyTorch (fp32 1.0, fp16 0.99, int8 0.99; "
                   "for int8 also the accuracy-aware search's target).")
@click.option("--max-acc-drop", type=click.FloatRange(0, 1), default=DEFAULTS.max_acc_drop,
              help="Override the precision's maximum top-1 accuracy drop vs PyTorch (fp16 0.01, int8 0.02).")
@click.option("--threads", type=click.IntRange(min=0), default=DEFAULTS.threads, show_default=True,
              help="ONNX Runtime threads for the parity run.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
              help="Seed of the parity/calibration selection.")
def cli(source, **options):
    """Export the student classifier of a pand run to a deployable bundle.

    SOURCE is a run directory (config.yaml + student.safetensors) or a student .safetensors checkpoint. The bundle
    holds the model file(s), manifest.json (classes, exact eval transform, I/O, precision, hashes, versions, parity
    results, valid) and reference.npz (PyTorch logits on the parity images, for pand-bench).

    \b
    Examples:
      pand-export runs/tiny --format onnx
      pand-export runs/tiny --format onnx --precision int8 --target cpu --calib-images 256
      pand-export runs/tiny --data-root /data/my_images           # the dataset moved since training
      pand-export runs/tiny --precision int8 --calib-images /data/calib_images
      pand-export runs/tiny --precision int8 --min-agreement 0.995     # accuracy-aware INT8 (the default)
      pand-export runs/cub --format trt --precision fp16 --max-batch 16
    """
    _setup_logging()
    src = click.get_current_context().get_parameter_source  # an option on the command line, even at its default
    try:
        check_format_options(options["format"], {p.name: p.opts[0] for p in cli.params
                                                 if src(p.name) != click.core.ParameterSource.DEFAULT})
    except PandError as e:
        _fail(str(e))
    timing_cache = options.pop("timing_cache")
    opts = ExportOptions(**options, timing_cache=Path(timing_cache) if timing_cache else None)
    try:
        result = export_bundle(source, opts)
    except (PandError, ConfigError, FileNotFoundError) as e:
        _fail(str(e))
    m = result.manifest
    click.echo(f"\nExport complete: {result.bundle}")
    click.echo(f"  models: {', '.join(f'{x.file} ({x.format}, {x.size_bytes / 1e6:.1f} MB)' for x in m.models)}")
    click.echo(f"  input: {m.input.name} {m.input.shape}  output: {m.output.name} {m.output.shape}  "
               f"precision: {m.precision}{'/' + m.int8_target if m.int8_target else ''}  opset: {m.opset}")
    int8 = next((x.info.get("int8") for x in m.models if x.info.get("int8")), None)
    if int8:
        search = int8.get("accuracy_aware") or {}
        chosen = (search.get("steps") or [{}])[search.get("chosen_step", 0)] if search else {}
        click.echo(f"  int8: layers kept in float: {', '.join(int8.get('float_nodes') or []) or 'none'}"
                   + (f"; agreement {chosen['agreement']:.2%} (target {search.get('target'):.2%}) after "
                      f"{len(search.get('steps', []))} search step(s)" if chosen else ""))
    hint = next_step_hint(m, result.bundle)
    if hint:
        click.echo(f"  {hint}")
    click.echo(f"  Benchmark: pand-bench {result.bundle}")
    report_parity("pand-export", "the bundle", result.valid, result.failures)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point ``pand-export``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="pand-export")


if __name__ == "__main__":
    main()
