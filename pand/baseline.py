"""``pand-train --baseline ce``: did the distillation pay? The CE baseline on the same data and budget.

A distillation run (a recipe with a teacher) is compared with the plain cross-entropy student trained with the
same student, seed, optimiser, schedule and number of optimiser steps, on the same labelled images (CE cannot
use the unlabelled transfer set, ``data.unlabeled``). The baseline is a run of its own in
``<run_dir>/baseline_ce/``; the gain on **validation** (the distilled student's val top-1 minus the baseline's,
in points) goes to the run's ``summary.json`` under ``baseline`` and is printed. Test numbers are reported beside
it, never used to decide anything.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from omegaconf import open_dict

from pand.config.schema import RunCfg
from pand.engine.loaders import steps_per_epoch
from pand.errors import ConfigError
from pand.utils.io import atomic_write_json, read_json

__all__ = ["BASELINES", "BASELINE_DIR", "baseline_config", "compare", "gain_lines"]

BASELINES = ("none", "ce")
BASELINE_DIR = "baseline_ce"


def baseline_config(cfg: RunCfg, n_labeled: int, n_unlabeled: int) -> RunCfg:
    """The CE baseline of ``cfg``: recipe ``ce`` (no teacher, no PSC), no transfer set, everything else equal, and
    ``nsd.epochs`` scaled so that it takes as many optimiser steps as ``cfg`` (rounded to whole epochs).

    Raises:
        ConfigError: ``cfg`` is not a distillation recipe (nothing to compare with).
    """
    if not cfg.recipe.use_teacher or cfg.recipe.name == "promptkd":
        raise ConfigError(f"--baseline ce compares a Stage NSD distillation recipe (kd, vl2lite, pand) with plain CE; "
                          f"recipe {cfg.recipe.name} has nothing to compare. Drop --baseline.")
    b = copy.deepcopy(cfg)
    batch = int(cfg.nsd.batch_size)
    steps = int(cfg.nsd.epochs) * steps_per_epoch(n_labeled, n_unlabeled, batch)
    with open_dict(b):
        b.name = f"{cfg.name}_baseline_ce"
        b.recipe.name, b.recipe.use_teacher, b.recipe.use_nlrd, b.recipe.distill = "ce", False, False, "align"
        b.psc.enabled = False
        b.data.unlabeled = None
        b.nsd.epochs = max(1, round(steps / steps_per_epoch(n_labeled, 0, batch)))
    return b


def compare(summary: Dict[str, Any], base: Dict[str, Any], run_dir: Path) -> Dict[str, Any]:
    """The ``baseline`` record of ``summary.json``: the baseline's numbers and the gains (points, val and test)."""
    def pts(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return None if a is None or b is None else round(100.0 * (float(a) - float(b)), 2)

    return {"recipe": "ce", "run_dir": str(run_dir), "val_top1": base.get("val_top1"),
            "test_top1": base.get("test_top1"), "epochs": base.get("epochs"),
            "gain_val_points": pts(summary.get("val_top1"), base.get("val_top1")),
            "gain_test_points": pts(summary.get("test_top1"), base.get("test_top1"))}


def gain_lines(recipe: str, summary: Dict[str, Any]) -> str:
    """Human-readable verdict of a run with a baseline (decided on validation)."""
    b = summary["baseline"]
    g = b["gain_val_points"]
    if g is None:
        return f"baseline ce: no validation split, so no verdict (test: {recipe} {summary.get('test_top1')} vs ce " \
               f"{b.get('test_top1')})"
    verdict = "distillation paid" if g > 0 else "distillation did NOT pay"
    test = "" if b["gain_test_points"] is None else f"; test {b['gain_test_points']:+.1f} points"
    return (f"{verdict}: {recipe} val top-1 {100 * summary['val_top1']:.1f} vs ce {100 * b['val_top1']:.1f} "
            f"= {g:+.1f} points on validation{test} (baseline run: {b['run_dir']})")


def run_with_baseline(cfg: RunCfg, run_dir: Path, train_run: Callable, stage: str = "all", resume: bool = False,
                      say: Callable[[str], None] = print) -> Optional[Dict[str, Any]]:
    """``train_run(cfg, run_dir, ...)``, then the CE baseline into ``run_dir/baseline_ce`` and the comparison.

    Returns the run's summary with ``baseline`` added (also written to ``summary.json``), or None on a rank other
    than 0 / for ``--stage psc``.
    """
    summary = train_run(cfg, run_dir, stage=stage, resume=resume)
    if summary is None:
        return None
    counts = summary.get("train_images") or {}
    bcfg = baseline_config(cfg, counts.get("labeled", 0), counts.get("unlabeled", 0))
    bdir = Path(run_dir) / BASELINE_DIR
    say(f"baseline: recipe ce on the {counts.get('labeled')} labelled images, {bcfg.nsd.epochs} epochs "
        f"(the same number of optimiser steps) -> {bdir}")
    done = bdir / "summary.json"
    base = read_json(done) if done.is_file() and resume else None
    if base is None:
        base = train_run(bcfg, bdir, stage="all", resume=resume and (bdir / "nsd" / "checkpoints").is_dir())
    record = compare(summary, base, bdir)
    if summary.get("baseline") != record:  # a finished run resumed with its baseline: no file changes
        summary["baseline"] = record
        atomic_write_json(Path(run_dir) / "summary.json", summary)
    say(gain_lines(str(cfg.recipe.name), summary))
    return summary
