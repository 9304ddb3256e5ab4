"""``pand-train``: the command line of the training library (thin; all work lives in :mod:`pand.train`)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import click

from pand.config import STAGES, load_config, to_yaml
from pand.config.schema import RunCfg
from pand.data import build_splits
from pand.errors import PandError


def _fail(msg: str) -> None:
    click.echo(f"pand-train: error: {msg}", err=True)
    sys.exit(2)


def _numbered(base: Path, n: int) -> Path:
    return base if n == 1 else base.with_name(f"{base.name}-{n}")


def resolve_run_dir(cfg: RunCfg, run_dir: str | None, resume: bool = False) -> Path:
    """``--run-dir`` > ``run_dir`` in the config > the next free ``runs/<name>``, ``runs/<name>-2``, ``runs/<name>-3``, ...

    Without an explicit directory a new run never lands in a used folder: ``runs/<name>`` when it is absent or
    empty, else the first free ``runs/<name>-N``. With ``resume`` (also ``pand-train --stage nsd``, which continues
    the Stage PSC of an earlier call) it is the last used one of that sequence (the run started most recently under
    this name).
    """
    if run_dir:
        return Path(run_dir)
    if cfg.run_dir:
        return Path(cfg.run_dir)
    base = Path("runs") / str(cfg.name)

    def used(p: Path) -> bool:
        return p.is_dir() and any(p.iterdir())

    n = 1
    while used(_numbered(base, n)):
        n += 1
    if resume:
        return _numbered(base, max(1, n - 1))
    return _numbered(base, n)


def _dry_run(cfg: RunCfg) -> None:
    splits = build_splits(cfg.data, cache_dir=cfg.cache_dir)
    click.echo(f"dataset: {cfg.data.name}  root: {splits.root}")
    click.echo(f"classes: {len(splits.class_names)}")
    for name in ("train", "val", "test"):
        ds = getattr(splits, name)
        dropped = len(splits.skipped.get(name, []))
        note = f" ({dropped} unreadable dropped: data.skip_corrupt=true)" if dropped else ""
        click.echo(f"{name:>5}: {len(ds) if ds is not None else 0} images{note}")
    if splits.base_classes is not None:
        click.echo(f"base/novel classes: {len(splits.base_classes)}/{len(splits.novel_classes)}")
    examples = ", ".join(splits.class_names[:3])
    click.echo(f"first classes: {examples}{', ...' if len(splits.class_names) > 3 else ''}")


def _launch_ddp(devices: int, argv: Sequence[str]) -> int:
    """Re-run this command under torch.distributed's own launcher (torchrun) with ``devices`` processes."""
    from torch.distributed.run import main as torchrun_main

    args = ["--standalone", f"--nproc_per_node={devices}", "-m", "pand.cli", *argv]
    click.echo(f"launching {devices} processes with torchrun: torchrun {' '.join(args)}")
    torchrun_main(args)
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True})
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--print-config", is_flag=True, help="Print the merged configuration and exit.")
@click.option("--dry-run", is_flag=True, help="Build the datasets and splits, print class and image counts, exit.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where the run writes. Default: runs/<name>, or the next free runs/<name>-2, -3, ... when it is "
                   "used (with --resume or --stage nsd: the last of them).")
@click.option("--stage", type=click.Choice(STAGES), default="all", show_default=True,
              help="Run only Stage PSC, only Stage NSD (reusing a PSC artifact), or the whole recipe.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in the run directory (a finished run "
              "is reported as finished and left unchanged).")
@click.option("--baseline", type=click.Choice(["none", "ce"]), default="none", show_default=True,
              help="After a distillation recipe (kd, vl2lite, pand), also train the CE student on the same labelled "
                   "images and step budget (in RUN_DIR/baseline_ce) and report the gain on validation.")
def cli(config, overrides, print_config, dry_run, run_dir, stage, resume, baseline):
    """Train with a pand recipe: Stage PSC (CoOp anchors) then Stage NSD (student distillation).

    CONFIG is a YAML file such as configs/tiny.yaml. OVERRIDES are key=value pairs applied last:
    pick a group file with group=name (data=oxford_pets, recipe=vl2lite, student=mobilenet_v2) or set a
    value with a dotted key (nsd.nlrd.k=5, trainer.devices=4, data.root=/data/CUB_200_2011).

    \b
    Examples:
      pand-train configs/tiny.yaml --dry-run
      pand-train configs/tiny.yaml recipe=pand --run-dir runs/tiny
      pand-train configs/demo.yaml recipe=pand --baseline ce     # did distillation pay? (gain on validation)
      pand-train configs/cub_resnet18.yaml data.root=/data/CUB_200_2011 trainer.devices=4
    """
    try:
        cfg = load_config(config, overrides)
    except PandError as e:
        _fail(str(e))
    if print_config:
        click.echo(to_yaml(cfg), nl=False)
        return
    try:
        if dry_run:
            _dry_run(cfg)
            return
        if cfg.trainer.devices > 1 and "LOCAL_RANK" not in os.environ:
            argv = [config, *overrides, "--stage", stage]
            argv += ["--run-dir", str(resolve_run_dir(cfg, run_dir, resume or stage == "nsd"))]
            if resume:
                argv.append("--resume")
            argv += ["--baseline", baseline]
            sys.exit(_launch_ddp(int(cfg.trainer.devices), argv))
        from pand.report import setup_logging
        from pand.train import run  # torch and the models load here, so --help and --dry-run stay quick

        log = setup_logging()
        target = resolve_run_dir(cfg, run_dir, resume or stage == "nsd")
        if not run_dir and not cfg.run_dir:
            log.info(f"run directory: {target}")
        if baseline == "ce" and stage != "psc":
            from pand.baseline import baseline_config, run_with_baseline

            baseline_config(cfg, 1, 0)  # refuses a recipe without a teacher before anything trains
            run_with_baseline(cfg, target, run, stage=stage, resume=resume, say=log.info)
        else:
            run(cfg, target, stage=stage, resume=resume)
    except (PandError, FileNotFoundError) as e:
        _fail(str(e))


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="pand-train")


if __name__ == "__main__":
    main()
