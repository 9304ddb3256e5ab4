"""The distillation study on the demo's synthetic world: which regime makes distillation pay, over seeds.

    .venv/bin/python bench/distill.py --seeds 1 --schedules 1,4 --starts scratch,upstream \\
        --transfers labelled,unlabelled --variants ce,kd,vl2lite,pand          # the 1-seed pruning grid
    .venv/bin/python bench/distill.py --seeds 5 --variants ce,pand,vl2lite,kd,pand-no-nlrd,pand-handcrafted,pand-const-ce
                                                                            # the chosen setting, 5 seeds
    .venv/bin/python bench/distill.py --seeds 5 --first-seed 3 --variants ce,pand,vl2lite,kd
                                                                            # only seeds 3 and 4 (extends a study)

The schedule, start and transfer set default to the demo's setting (``pand.demo.setting.DEMO_SETTING``, picked on
validation by the pilots).

Every cell trains the same student (configs/demo.yaml: data, label budget, optimiser, cosine schedule) from the
same teacher (pre-trained once on the web pool, cached), once per student seed (``trainer.seed``; the labelled
subset and the validation split stay fixed). The axes of a cell:

* **variant** (the recipe): ``ce`` (labels only), ``kd`` (Hinton's logit KD, hand-crafted anchors), ``vl2lite``
  (hand-crafted anchors, L1 + KL alignment), ``pand`` (PSC anchors + L1 + KL + NLRD) and the PAND ablations
  ``pand-no-nlrd``, ``pand-handcrafted`` (no Stage PSC), ``pand-const-ce`` (``w_ce = 0.5``, no ramp);
* the **setting** (:mod:`pand.demo.setting`): the schedule (``k x`` the demo's 510 optimiser steps), the student's
  start (``scratch`` or ``upstream``: pre-trained with CE on the disjoint upstream set, the demo's stand-in for
  ImageNet weights) and the transfer set (``labelled``: the 240 labelled images; ``unlabelled``: + the 480 training
  images beyond the label budget, labels unused; CE ignores it and gets the same number of steps).

Cells run as separate ``pand-train`` processes, ``--jobs`` at a time with one thread each
(:func:`pand.demo.runner.train_runs`). Finished runs with the same configuration are reused and interrupted ones
resumed, so the study continues where it stopped.

Also measured once: the teacher's top-1 on the student's training views (the random-resized crops the student
trains on) for several crop scales, against its top-1 through the student's eval transform and its own.

Writes ``<run-dir>/distill.json`` (every cell, every seed) and ``distill.md`` (mean +- std over seeds, sample std).
Choices are made on validation numbers only; the tables show test beside them.
"""
from __future__ import annotations

import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pand.config import config_dir, load_config  # noqa: E402
from pand.demo.regime import regime_gate, regime_sentence  # noqa: E402
from pand.demo.runner import train_runs  # noqa: E402
from pand.demo.setting import DEMO_SETTING, STARTS, TRANSFERS, Setting, setting_overrides  # noqa: E402
from pand.utils.io import atomic_write_json, atomic_write_text  # noqa: E402

VARIANTS: Dict[str, List[str]] = {
    "ce": ["recipe=ce"],
    "kd": ["recipe=kd"],
    "vl2lite": ["recipe=vl2lite"],
    "pand": ["recipe=pand"],
    "pand-no-nlrd": ["recipe=pand", "recipe.use_nlrd=false"],
    "pand-handcrafted": ["recipe=pand", "recipe.anchors=handcrafted", "psc.enabled=false"],
    "pand-const-ce": ["recipe=pand", "nsd.ce_weight=0.5"],
}


@dataclass(frozen=True)
class Cell:
    variant: str
    setting: Setting

    @property
    def key(self) -> str:
        s = self.setting
        return f"{self.variant}/x{s.schedule}-{s.start}-{s.transfer}"


def mean_std(xs: Sequence[float]) -> Dict[str, float]:
    """``{mean, std, n}`` of ``xs`` (sample standard deviation, 0 for a single value)."""
    xs = [float(x) for x in xs]
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def cells(variants: Sequence[str], schedules: Sequence[int], starts: Sequence[str], transfers: Sequence[str]
          ) -> List[Cell]:
    """The product of the axes, without ``ce`` x ``unlabelled`` (CE never uses unlabelled images)."""
    out = []
    for s, st, tr, v in itertools.product(schedules, starts, transfers, variants):
        if v == "ce" and tr == "unlabelled":
            continue
        out.append(Cell(v, Setting(int(s), st, tr)))
    return out


def teacher_view_accuracy(world, scales: Sequence[Tuple[float, float]], passes: int = 2) -> Dict[str, float]:
    """Teacher top-1 (hand-crafted anchors) on the labelled training images through the student's training
    transform (``RandomResizedCrop(scale)`` + flip, ``passes`` draws each), the student's eval transform, and the
    teacher's own transform (its open_clip preprocessing)."""
    import torch

    from pand.data import build_splits, create_transform, preprocess_spec_from_student
    from pand.data.base import read_rgb
    from pand.models.teacher import create_teacher
    from pand.models.teacher_source import LiveTeacher
    from pand.psc import handcrafted_anchors

    cfg = world.cfg
    teacher = create_teacher(cfg.teacher)
    splits = build_splits(cfg.data, cache_dir=cfg.cache_dir)
    anchors = handcrafted_anchors(teacher, splits.prompts())
    src = LiveTeacher(teacher, cfg.student.mean, cfg.student.std)
    pp = preprocess_spec_from_student(cfg.student)
    out: Dict[str, float] = {}
    torch.manual_seed(0)

    def acc(tf, n_pass: int) -> float:
        ds = splits.train.with_transform(tf)
        hit = tot = 0
        for _ in range(n_pass):
            for i in range(0, len(ds), 64):
                batch = [ds[j] for j in range(i, min(i + 64, len(ds)))]
                x = torch.stack([b[0] for b in batch])
                y = torch.tensor([b[1] for b in batch])
                with torch.no_grad():
                    pred = (src.features(x, None) @ anchors.t()).argmax(1)
                hit += int((pred == y).sum())
                tot += len(batch)
        return hit / tot

    for lo, hi in scales:
        out[f"student train view, crop scale [{lo}, {hi}]"] = acc(create_transform(pp, True, "standard", (lo, hi)),
                                                                   passes)
    out["student eval transform"] = acc(create_transform(pp, False), 1)
    feats = []
    teacher_tf = create_transform(teacher.preprocess_spec, False)
    with torch.no_grad():
        for p, _ in splits.train.samples:
            feats.append(teacher.encode_image(teacher_tf(read_rgb(p)).unsqueeze(0)))
    f = torch.nn.functional.normalize(torch.cat(feats), dim=-1)
    y = torch.tensor(splits.train.targets)
    out["teacher's own transform"] = float(((f @ anchors.t()).argmax(1) == y).float().mean())
    return out


def seed_list(seeds: int, first_seed: int = 0) -> List[int]:
    """The student seeds ``first_seed .. seeds - 1`` a study trains.

    Raises:
        click.UsageError: the range is empty.
    """
    if not 0 <= first_seed < seeds:
        raise click.UsageError(f"--first-seed {first_seed} leaves no seed to train: it must be in 0..{seeds - 1} "
                               f"(--seeds {seeds} means seeds 0..{seeds - 1})")
    return list(range(first_seed, seeds))


def render(rows: Dict[str, Dict], gate: Dict, views: Dict[str, float], seeds: Sequence[int], wall_s: float,
           command: str) -> str:
    """The Markdown report of a finished study over the student seeds ``seeds``."""
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds, {seeds[0]}..{seeds[-1]}"
    out = [f"# Distillation study ({which})", "", f"Command: `{command}`  ",
           f"Wall time: {wall_s / 60:.1f} min", "", regime_sentence(gate) if gate else "", "",
           "| variant | schedule | start | transfer | val top-1 (mean +- std) | test top-1 (mean +- std) | "
           "test per seed | val gain over ce |", "|---|---|---|---|---|---|---|---|"]
    for key, r in rows.items():
        v, t = r["val"], r["test"]
        gain = "" if r.get("gain_over_ce_val") is None else f"{100 * r['gain_over_ce_val']:+.1f}"
        out.append(f"| {r['variant']} | {r['schedule']}x ({r['steps']} steps) | {r['start']} | {r['transfer']} | "
                   f"{100 * v['mean']:.1f} +- {100 * v['std']:.1f} | {100 * t['mean']:.1f} +- {100 * t['std']:.1f} | "
                   f"{' '.join(f'{100 * x:.1f}' for x in r['test_per_seed'])} | {gain} |")
    if views:
        out += ["", "Teacher top-1 on the labelled training images, by the view it sees:", "",
                "| view | teacher top-1 |", "|---|---|"]
        out += [f"| {k} | {100 * v:.1f} |" for k, v in views.items()]
    return "\n".join(out) + "\n"


def _csv(value: str, allowed: Optional[Sequence[str]] = None, what: str = "") -> List[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if allowed is not None and v not in allowed]
    if bad or not items:
        raise click.UsageError(f"{what}: unknown {bad}; choose from {', '.join(allowed or [])}")
    return items


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default=None, help="Run config (default configs/demo.yaml).")
@click.option("--run-dir", default="runs/distill", show_default=True, help="Where the cells and the report go.")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True, help="Student seeds 0..N-1.")
@click.option("--first-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Train and report seeds FIRST..N-1 only (extends a study run elsewhere: --seeds 5 --first-seed 3 "
                   "trains seeds 3 and 4).")
@click.option("--variants", default="ce,kd,vl2lite,pand", show_default=True,
              help=f"Comma-separated recipes/ablations: {', '.join(VARIANTS)}.")
@click.option("--schedules", default=str(DEMO_SETTING.schedule), show_default=True,
              help="Comma-separated multiples of the 510-step budget (default: the demo's setting).")
@click.option("--starts", default=DEMO_SETTING.start, show_default=True,
              help="scratch and/or upstream (default: the demo's setting).")
@click.option("--transfers", default=DEMO_SETTING.transfer, show_default=True,
              help="labelled and/or unlabelled (default: the demo's setting).")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Cells trained at once (one thread each).")
@click.option("--views/--no-views", default=True, show_default=True,
              help="Measure the teacher's top-1 on the student's training views.")
@click.argument("overrides", nargs=-1)
def main(config_path, run_dir, seeds, first_seed, variants, schedules, starts, transfers, jobs, views, overrides):
    """Train every cell of the grid with every seed; report val/test top-1 mean +- std and the gain over CE."""
    from pand.demo.upstream import pretrain_upstream_student
    from pand.demo.world import prepare_world, teacher_zero_shot
    from pand.models.teacher import create_teacher

    seed_ids = seed_list(seeds, first_seed)
    names = _csv(variants, list(VARIANTS), "--variants")
    scheds = [int(s) for s in _csv(schedules, None, "--schedules")]
    st = _csv(starts, STARTS, "--starts")
    tr = _csv(transfers, TRANSFERS, "--transfers")
    t0 = time.time()
    config_path = config_path or str(config_dir() / "demo.yaml")
    run_dir = Path(run_dir)
    world = prepare_world(config_path, list(overrides), promptkd_student=False)
    zs = teacher_zero_shot(world, create_teacher(world.cfg.teacher))
    upstream = None
    if "upstream" in st:
        upstream = pretrain_upstream_student(str(world.cfg.student.arch), world.cfg.data.synthetic,
                                             world.cfg.cache_dir, student_cfg=world.cfg.student)
        click.echo(f"upstream start: {upstream.weights_path} (upstream val top-1 {100 * upstream.val_top1:.1f})")
    base_cfg = load_config(config_path, world.overrides)
    n_lab = int(base_cfg.data.labels_per_class) * len(world.splits.class_names)
    n_unl = len(world.splits.train) - n_lab
    batch = int(base_cfg.nsd.batch_size)

    def overrides_of(c: Cell, seed: int) -> List[str]:
        over = [*world.overrides, *VARIANTS[c.variant], f"trainer.seed={seed}", f"name=distill_{c.variant}_s{seed}"]
        return over + setting_overrides(c.setting, c.variant != "ce", n_lab, n_unl, batch,
                                        str(upstream.weights_path) if upstream is not None else None)

    grid = cells(names, scheds, st, tr)
    jobs_list = [(c, seed) for seed in seed_ids for c in grid]
    click.echo(f"{len(grid)} cells x {len(seed_ids)} seed(s) = {len(jobs_list)} runs, {jobs} at a time")
    items = [(load_config(config_path, overrides_of(c, seed)), run_dir / c.key.replace("/", "__") / f"seed{seed}")
             for c, seed in jobs_list]
    summaries = train_runs(items, jobs=jobs, say=click.echo)
    done: Dict[Tuple[Cell, int], dict] = dict(zip(jobs_list, summaries))

    view_acc = teacher_view_accuracy(world, [(0.5, 1.0), (0.8, 1.0), (0.25, 1.0)]) if views else {}
    rows: Dict[str, Dict] = {}
    for c in grid:
        per = [done[(c, s)] for s in seed_ids]
        vals, tests = [float(p["val_top1"]) for p in per], [float(p["test_top1"]) for p in per]
        rows[c.key] = {"variant": c.variant, **c.setting.as_dict(), "val": mean_std(vals), "test": mean_std(tests),
                       "val_per_seed": vals, "test_per_seed": tests, "overrides": overrides_of(c, seed_ids[0])[
                           len(world.overrides):]}
    for key, r in rows.items():  # the CE cell with the same schedule and start (CE ignores the transfer set)
        ce = rows.get(f"ce/x{r['schedule']}-{r['start']}-labelled")
        r["gain_over_ce_val"] = None if ce is None or r["variant"] == "ce" else r["val"]["mean"] - ce["val"]["mean"]
        r["gain_over_ce_test"] = None if ce is None or r["variant"] == "ce" else r["test"]["mean"] - ce["test"]["mean"]
    ce_rows = [r for r in rows.values() if r["variant"] == "ce"]
    gate = regime_gate(zs["val"]["all"], max(r["val"]["mean"] for r in ce_rows)) if ce_rows else {}
    wall = time.time() - t0
    command = "bench/distill.py " + " ".join(a for a in sys.argv[1:])
    payload = {"seeds": seed_ids, "config": config_path, "overrides": list(overrides), "wall_s": round(wall, 1),
               "teacher_zero_shot": zs, "regime": gate, "cells": rows, "teacher_on_views": view_acc,
               "upstream": None if upstream is None else {"weights": str(upstream.weights_path),
                                                          "val_top1": upstream.val_top1},
               "command": command}
    atomic_write_json(run_dir / "distill.json", payload)
    md = render(rows, gate, view_acc, seed_ids, wall, command)
    atomic_write_text(run_dir / "distill.md", md)
    click.echo("\n" + md)


if __name__ == "__main__":
    main()
