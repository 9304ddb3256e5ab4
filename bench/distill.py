"""Multi-seed comparison of the distillation recipes on the demo's synthetic world, with ablations.

    .venv/bin/python bench/distill.py                 # 3 seeds x 6 variants, configs/demo.yaml, runs/distill/
    .venv/bin/python bench/distill.py --seeds 1 --variants ce,pand nsd.epochs=5

Every variant trains the same student (configs/demo.yaml: data, label budget, optimiser, schedule, budget) from
the same teacher (pre-trained once on the web pool, cached), once per student seed (``trainer.seed``; the labelled
subset and the validation split stay fixed). Variants:

* ``ce``: cross-entropy on the labels only;
* ``vl2lite``: hand-crafted-prompt anchors, L1 + KL alignment (VL2Lite's KL reduction), no NLRD;
* ``pand``: PSC anchors + L1 + KL + NLRD (the seed's CE ramp ``w_ce = e / (8E)``);
* ``pand-no-nlrd``: PAND without NLRD;
* ``pand-handcrafted``: PAND with hand-crafted anchors (no Stage PSC);
* ``pand-const-ce``: PAND with a constant ``w_ce = 0.5`` instead of the ramp.

Writes ``<run-dir>/distill.json`` and ``distill.md``: per variant, validation and test top-1 as mean +- std over
seeds (sample std, ``ddof=1``) and the per-seed numbers, plus the regime gate computed from validation only.
Finished runs with the same configuration are reused, so an interrupted benchmark resumes where it stopped.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS: Dict[str, List[str]] = {
    "ce": ["recipe=ce"],
    "vl2lite": ["recipe=vl2lite"],
    "pand": ["recipe=pand"],
    "pand-no-nlrd": ["recipe=pand", "recipe.use_nlrd=false"],
    "pand-handcrafted": ["recipe=pand", "recipe.anchors=handcrafted", "psc.enabled=false"],
    "pand-const-ce": ["recipe=pand", "nsd.ce_weight=0.5"],
}


def mean_std(xs: Sequence[float]) -> Dict[str, float]:
    """``{mean, std, n}`` of ``xs`` (sample standard deviation, 0 for a single value)."""
    xs = [float(x) for x in xs]
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def render(rows: Dict[str, Dict], gate: Dict, seeds: int, wall_s: float, command: str) -> str:
    """The Markdown table of a finished benchmark."""
    from pand.demo.regime import regime_sentence

    out = [f"# Distillation benchmark ({seeds} seed{'s' if seeds > 1 else ''})", "", f"Command: `{command}`  ",
           f"Wall time: {wall_s / 60:.1f} min", "", regime_sentence(gate) if gate else "", "",
           "| variant | val top-1 (mean +- std) | test top-1 (mean +- std) | test per seed |", "|---|---|---|---|"]
    for name, r in rows.items():
        v, t = r["val"], r["test"]
        out.append(f"| {name} | {100 * v['mean']:.1f} +- {100 * v['std']:.1f} | {100 * t['mean']:.1f} +- "
                   f"{100 * t['std']:.1f} | {' '.join(f'{100 * x:.1f}' for x in r['test_per_seed'])} |")
    return "\n".join(out) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default=None, help="Run config (default configs/demo.yaml).")
@click.option("--run-dir", default="runs/distill", show_default=True)
@click.option("--seeds", type=int, default=3, show_default=True, help="Student seeds 0..N-1.")
@click.option("--variants", default=",".join(VARIANTS), show_default=True, help="Comma-separated subset.")
@click.argument("overrides", nargs=-1)
def main(config_path, run_dir, seeds, variants, overrides):
    """Run every variant with every seed and report test top-1 mean +- std."""
    from pand.config import config_dir, load_config
    from pand.demo.regime import regime_gate
    from pand.demo.world import prepare_world, teacher_zero_shot, train_or_reuse
    from pand.models.teacher import create_teacher
    from pand.train import run as train_run
    from pand.utils.io import atomic_write_json, atomic_write_text

    names = [v for v in variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or seeds < 1:
        raise click.UsageError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}" if unknown
                               else "--seeds must be >= 1")
    t0 = time.time()
    config_path = config_path or str(config_dir() / "demo.yaml")
    run_dir = Path(run_dir)
    world = prepare_world(config_path, list(overrides))
    zs = teacher_zero_shot(world, create_teacher(world.cfg.teacher))
    results: Dict[str, Dict] = {}
    for name in names:
        per_seed = []
        for seed in range(seeds):
            rdir = run_dir / name / f"seed{seed}"
            cfg = load_config(config_path, [*world.overrides, *VARIANTS[name], f"trainer.seed={seed}",
                                            f"name=distill_{name}_s{seed}"])
            click.secho(f"== {name} seed {seed}", fg="cyan", bold=True)
            train_or_reuse(rdir, cfg, train_run, say=click.echo)
            s = json.loads((rdir / "summary.json").read_text())
            per_seed.append((float(s["val_top1"]), float(s["test_top1"])))
            click.echo(f"   val {100 * per_seed[-1][0]:.1f}  test {100 * per_seed[-1][1]:.1f}")
        results[name] = {"val": mean_std([v for v, _ in per_seed]), "test": mean_std([t for _, t in per_seed]),
                         "val_per_seed": [v for v, _ in per_seed], "test_per_seed": [t for _, t in per_seed],
                         "overrides": VARIANTS[name]}
    gate = regime_gate(zs["val"]["all"], results["ce"]["val"]["mean"]) if "ce" in results else {}
    wall = time.time() - t0
    command = "bench/distill.py " + " ".join([f"--seeds {seeds}", *([f"--variants {variants}"]
                                              if names != list(VARIANTS) else []), *overrides])
    payload = {"seeds": seeds, "config": config_path, "overrides": list(overrides), "wall_s": round(wall, 1),
               "teacher_zero_shot": zs, "regime": gate, "variants": results, "command": command}
    atomic_write_json(run_dir / "distill.json", payload)
    md = render(results, gate, seeds, wall, command)
    atomic_write_text(run_dir / "distill.md", md)
    click.echo("\n" + md)


if __name__ == "__main__":
    main()
