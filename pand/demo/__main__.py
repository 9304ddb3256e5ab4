"""``python -m pand.demo``: the whole toolchain on the built-in synthetic FGVC benchmark (what ``make demo`` runs).

Steps, as the demo prints them (each reuses its cached result on a second run):

1. build the synthetic benchmark (24 fine-grained classes, 64 px) with its captioned *web pool* of every class,
   disjoint from the student's images; pre-train the demo teacher (a small open_clip ModifiedResNet) contrastively
   on the web pool, early-stopped on validation zero-shot top-1 (:mod:`pand.demo.teacher_pretrain`), and report
   what it knows (zero-shot top-1 on val and test, per attribute);
2. the student's start: its backbone pre-trained with cross-entropy on the disjoint upstream set
   (:mod:`pand.demo.upstream`, cached; the stand-in for the ImageNet weights real runs start from), or random
   initialisation with ``--start scratch``;
3. Stage PSC + Stage NSD for the recipes (default ``ce`` and ``pand``) in the setting
   :data:`pand.demo.setting.DEMO_SETTING` that the distillation study chose on validation (schedule, start, transfer
   set; same student, data, seed, optimiser and number of optimiser steps for every recipe; two runs side by side,
   one thread each); every distillation recipe reports its gain over ``ce`` on validation; the regime gate
   (:mod:`pand.demo.regime`) is decided from validation numbers only;
4. PromptKD (unlabeled, base-to-novel) for the ``reference`` and ``inductive`` pools with a PromptSRC and a CoOp
   teacher;
5. ``pand-export --format onnx`` of the PAND student in fp32 and int8 (CPU flavour); a bundle that fails its parity
   gate fails the demo, except the int8 one in ``--quick`` mode (reported, not enforced: a student trained for a few
   steps has near-tie logits, so its int8 top-1 agreement is a coin toss that varies with the CPU);
6. ``pand-bench`` on both bundles;
7. ``report.md`` (+ PNG plots) and ``results.json`` in the run directory.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import click

from pand.config import config_dir, load_config
from pand.demo.regime import regime_gate, regime_sentence
from pand.demo.report import write_report
from pand.demo.runner import train_runs
from pand.demo.setting import DEMO_SETTING, STARTS, TRANSFERS, Setting, setting_overrides
from pand.demo.upstream import UpstreamCfg, pretrain_upstream_student
from pand.demo.world import prepare_world, teacher_zero_shot
from pand.models.teacher import create_teacher
from pand.promptkd import run_promptkd_grid
from pand.utils.io import atomic_write_json

# What the demo trains in DEMO_SETTING (ce first: the baseline of every gain and the regime gate). kd and vl2lite
# and the PAND ablations are in bench/distill.py, which keeps `make demo` shorter.
RECIPES = ("ce", "pand")
ALL_RECIPES = ("ce", "kd", "vl2lite", "pand")
# --quick: every stage at a toy size (CI), only to prove that the stages connect
QUICK = ["psc.epochs=3", "nsd.epochs=2", "promptkd.epochs=1", "promptkd.promptsrc.epochs=1",
         "data.synthetic.train_per_class=8", "data.synthetic.val_per_class=3", "data.synthetic.test_per_class=4",
         "data.synthetic.web_per_class=10", "data.labels_per_class=6"]


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}"


def _say(msg: str) -> None:
    click.secho(f"\n== {msg}", fg="cyan", bold=True)


# The numbered steps of the module docstring; the demo prints them as k/STEPS in the order they run.
STEPS = 7


class _Steps:
    """Prints each step as ``== k/STEPS <title>``, counting as it goes, so the printed numbers follow the order the
    steps run in (hand-written numbers drifted once: two steps printed "2/6")."""

    def __init__(self, total: int = STEPS):
        self.total, self.done = total, 0

    def __call__(self, title: str) -> None:
        if self.done >= self.total:
            raise RuntimeError(f"the demo printed more than its {self.total} steps; update STEPS and the docstring")
        self.done += 1
        _say(f"{self.done}/{self.total} {title}")


def _tool(name: str) -> List[str]:
    """The console script ``name`` of this environment (next to the interpreter), else ``python -m``."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    module = {"pand-export": "pand_export.cli", "pand-bench": "pand_runtime.bench", "pand-train": "pand.cli"}[name]
    return [sys.executable, "-m", module]


def _run_tool(args: List[str], log: Path) -> subprocess.CompletedProcess:
    click.echo("$ " + " ".join(Path(a).name if i == 0 else a for i, a in enumerate(args)))
    proc = subprocess.run(args, capture_output=True, text=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(args) + "\n" + proc.stdout + proc.stderr + "\n")
    tail = (proc.stdout or "").strip().splitlines()[-25:]
    if tail:
        click.echo("\n".join("  " + t for t in tail))
    if proc.returncode != 0:
        click.secho(f"  exit {proc.returncode}; stderr tail:\n  " + "\n  ".join(proc.stderr.strip().splitlines()[-15:]),
                    fg="red")
    return proc


def _failed_gate_only(manifest: Dict[str, Any]) -> bool:
    """True when ``pand-export`` finished the bundle and only its parity gate failed (``valid: false``)."""
    return manifest.get("valid") is False and bool((manifest.get("parity") or {}).get("failures"))


def _load(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _promptkd(config_path: str, over: List[str], out_root: Path) -> List[Dict[str, Any]]:
    """PromptKD for the reference and inductive pools with PromptSRC and CoOp teachers (reused when the saved grid
    was made with the same configuration)."""
    from omegaconf import OmegaConf

    pcfg = load_config(config_path, [*over, "recipe=promptkd", "name=demo_promptkd", "data.labels_per_class=null"])
    want = OmegaConf.to_container(pcfg, resolve=True)
    saved = _load(out_root / "grid.json")
    if saved.get("config") == want and saved.get("rows") and all("error" not in r for r in saved["rows"]):
        click.echo(f"reusing {out_root} (same configuration)")
        return saved["rows"]
    if out_root.exists():
        shutil.rmtree(out_root)
    rows = run_promptkd_grid(pcfg, out_root, pools=("reference", "inductive"), teachers=("promptsrc", "coop"),
                             progress=True, on_error=lambda t, p, e: click.secho(f"PromptKD {t}/{p} failed: {e}",
                                                                                  fg="red"))
    atomic_write_json(out_root / "grid.json", {"config": want, "rows": rows})
    for r in rows:
        if "error" not in r:
            click.echo(f"  {r['teacher_prompts']:9s} {r['pool']:10s} teacher B/N/HM {r['teacher']['base']:.1f}/"
                       f"{r['teacher']['novel']:.1f}/{r['teacher']['hm']:.1f}  student {r['student']['base']:.1f}/"
                       f"{r['student']['novel']:.1f}/{r['student']['hm']:.1f}")
    return rows


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default=None, help="Demo config (default configs/demo.yaml).")
@click.option("--run-dir", default="runs/demo", show_default=True, help="Where the demo writes.")
@click.option("--quick", is_flag=True, help="Tiny budget (CI): a few epochs per stage, only to prove every stage connects.")
@click.option("--fresh", is_flag=True, help="Delete the run directory first (caches under cache_dir are kept).")
@click.option("--recipes", default=",".join(RECIPES), show_default=True,
              help=f"Comma-separated recipes to train ({', '.join(ALL_RECIPES)}); ce is always trained first.")
@click.option("--schedule", type=click.IntRange(min=1), default=DEMO_SETTING.schedule, show_default=True,
              help="Multiple of the 510-step base budget.")
@click.option("--start", type=click.Choice(STARTS), default=DEMO_SETTING.start, show_default=True,
              help="The student's start: random init, or pre-trained on the disjoint upstream set.")
@click.option("--transfer", type=click.Choice(TRANSFERS), default=DEMO_SETTING.transfer, show_default=True,
              help="labelled images only, or also the unlabelled training images (the teacher labels them).")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Recipes trained at once (one thread each).")
@click.argument("overrides", nargs=-1)
def main(config_path, run_dir, quick, fresh, recipes, schedule, start, transfer, jobs, overrides):
    """Run teacher pre-training -> the student's upstream start -> PSC + NSD (--recipes, default ce,pand) ->
    PromptKD -> export -> bench -> report."""
    t_start = time.time()
    run_dir = Path(run_dir)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = config_path or str(config_dir() / "demo.yaml")
    results: Dict[str, Any] = {"quick": quick, "config": config_path}
    step = _Steps()

    # 1. data + demo teacher --------------------------------------------------------------------------------------
    step("synthetic benchmark + demo teacher (contrastive pre-training on the web pool)")

    world = prepare_world(config_path, [*(QUICK if quick else []), *overrides],
                          pretrain_steps=40 if quick else None)
    cfg, over = world.cfg, world.overrides
    results["world"] = {"web_images": world.web_images, "classes": len(world.classes),
                        "train": len(world.splits.train), "val": len(world.splits.val),
                        "test": len(world.splits.test), "labels_per_class": cfg.data.labels_per_class}
    results["teacher_pretrain"] = world.pretrain
    results["teacher_pretrain_s"] = world.seconds.get("teacher_pretrain")
    results["teacher_ckpt"] = str(world.teacher_ckpt)
    tm = world.pretrain.get("teacher", {})
    click.echo(f"teacher checkpoint: {world.teacher_ckpt} (best validation zero-shot {_pct(tm.get('best_val_top1'))}"
               f" at step {tm.get('best_step')}, stopped: {tm.get('stopped')})")
    zs = teacher_zero_shot(world, create_teacher(cfg.teacher))
    results["teacher_zero_shot"] = zs
    v = zs["val"]
    click.echo(f"teacher zero-shot top-1 (val): all {_pct(v['all'])}  base {_pct(v['base'])}  novel "
               f"{_pct(v['novel'])}; per attribute: "
               + ", ".join(f"{a} {_pct(x)}" for a, x in v["attributes"].items()))

    # 2-3. the student's start and the recipes ---------------------------------------------------------------------
    names = ["ce", *[r for r in recipes.split(",") if r and r != "ce"]]
    unknown = [r for r in names if r not in ALL_RECIPES]
    if unknown:
        sys.exit(f"--recipes: unknown {unknown}; choose from {', '.join(ALL_RECIPES)}")
    setting = Setting(schedule if not quick else 1, start, transfer)
    results["setting"] = setting.as_dict()
    if quick:  # --quick trains its toy epoch count (QUICK), not the setting's steps
        results["setting"]["steps"] = None
    results["steps"] = results["setting"]["steps"]
    upstream = None
    if setting.start == "upstream":
        step("the student's start: its backbone pre-trained with CE on the disjoint upstream set "
             "(cached after the first run)")
        ucfg = UpstreamCfg(train_per_class=4, val_per_class=2, epochs=1) if quick else UpstreamCfg()
        upstream = pretrain_upstream_student(str(cfg.student.arch), cfg.data.synthetic, cfg.cache_dir, ucfg,
                                             student_cfg=cfg.student,
                                             skip_nonfinite=bool(cfg.trainer.skip_nonfinite_steps))
        click.echo(f"upstream backbone: {upstream.weights_path} ({len(upstream.classes)} classes disjoint from the "
                   f"benchmark's; upstream val top-1 {_pct(upstream.val_top1)}"
                   f"{', cached' if upstream.cached else f', {upstream.seconds:.0f} s'})")
    else:
        step("the student's start: from scratch (random initialisation)")
    results["student_init"] = {"kind": setting.start,
                               "upstream_val_top1": upstream.val_top1 if upstream is not None else None,
                               "weights": str(upstream.weights_path) if upstream is not None else None}
    n_lab = int(cfg.data.labels_per_class) * len(world.classes)
    n_unl = len(world.splits.train) - n_lab
    step(f"Stage NSD: {', '.join(names)} -- {results['steps'] or 'a toy number of'} optimiser steps each, start "
         f"{setting.start}, "
         f"transfer set: {n_lab} labelled" + (f" + {n_unl} unlabelled images" if setting.transfer == "unlabelled"
                                             else " images"))
    items = []
    for recipe in names:
        rcfg = load_config(config_path, [*over, f"recipe={recipe}", f"name=demo_{recipe}"])
        extra = setting_overrides(setting, bool(rcfg.recipe.use_teacher), n_lab, n_unl, int(rcfg.nsd.batch_size),
                                  str(upstream.weights_path) if upstream is not None else None)
        if quick:  # --quick keeps its toy epoch count (QUICK); only the start and the transfer set apply
            extra = [o for o in extra if not o.startswith(("nsd.epochs=", "nsd.eval_every="))]
        items.append((load_config(config_path, [*over, f"recipe={recipe}", f"name=demo_{recipe}", *extra]),
                      run_dir / recipe))
    summaries = train_runs(items, jobs=jobs, say=click.echo)
    results["recipes"] = dict(zip(names, summaries))
    ce_val = results["recipes"]["ce"]["val_top1"]
    results["regime"] = regime_gate(v["all"], ce_val)
    click.secho(regime_sentence(results["regime"]), bold=True)
    for recipe, s in results["recipes"].items():
        s["gain_over_ce_val"] = None if recipe == "ce" else float(s["val_top1"]) - float(ce_val)
        if recipe != "ce":
            g = 100 * s["gain_over_ce_val"]
            click.secho(f"{recipe}: val top-1 {_pct(s['val_top1'])} vs ce {_pct(ce_val)}: {g:+.1f} points on "
                        f"validation -- distillation {'paid' if g > 0 else 'did NOT pay'}", bold=True,
                        fg="green" if g > 0 else "red")
    results["psc"] = _load(run_dir / "pand" / "psc" / "summary.json")

    step("PromptKD (unlabeled distillation into a smaller prompted CLIP encoder): reference and inductive pools, "
         "PromptSRC and CoOp teachers")
    results["promptkd"] = _promptkd(config_path, over, run_dir / "promptkd")
    pdir = next((Path(r["run_dir"]) for r in results["promptkd"] if "error" not in r), None)

    # 5-6. export + bench ----------------------------------------------------------------------------------------
    step("export the PAND student to ONNX (fp32, int8)")
    bundles = {}
    for prec in ("fp32", "int8"):
        out = run_dir / "export" / f"pand_{prec}"
        args = [*_tool("pand-export"), str(run_dir / "pand"), "--format", "onnx", "--precision", prec,
                "--output", str(out)]
        if prec == "int8":
            args += ["--target", "cpu", "--calib-images", "64" if quick else "256"]
        shutil.rmtree(out, ignore_errors=True)  # so that a manifest found below was written by this export
        proc = _run_tool(args, run_dir / "export" / "export.log")
        ok, manifest = proc.returncode == 0, _load(out / "manifest.json")
        bundles[prec] = {"path": str(out), "ok": ok, "manifest": manifest,
                         "gate_waived": quick and prec == "int8" and not ok and _failed_gate_only(manifest)}
    results["export"] = bundles
    if pdir is not None and Path(pdir, "student.safetensors").is_file():
        out = run_dir / "export" / "promptkd_fp32"
        proc = _run_tool([*_tool("pand-export"), str(pdir), "--format", "onnx", "--precision", "fp32",
                          "--output", str(out)], run_dir / "export" / "export.log")
        results["export_promptkd"] = {"path": str(out), "ok": proc.returncode == 0,
                                      "manifest": _load(out / "manifest.json")}

    step("pand-bench (ONNX Runtime, CPU)")
    ok = [b["path"] for b in bundles.values() if Path(b["path"], "manifest.json").is_file()]
    bench_dir = run_dir / "bench"
    if ok:
        args = [*_tool("pand-bench"), *ok, "--batch", "1", "--batch", "8", "--batch", "32",
                "--json", str(bench_dir / "bench.json"), "--markdown", str(bench_dir / "bench.md")]
        if quick:
            args += ["--min-time", "0.3", "--iterations", "5"]
        _run_tool(args, bench_dir / "bench.log")
    results["bench"] = _load(bench_dir / "bench.json")

    # 7. report --------------------------------------------------------------------------------------------------
    step("report")
    results["wall_s"] = round(time.time() - t_start, 1)
    table = write_report(run_dir, results)
    click.echo(table)
    click.secho(f"\nreport: {run_dir / 'report.md'}   total wall time: {results['wall_s']:.0f} s", bold=True)
    for p, b in bundles.items():
        if b["gate_waived"]:
            click.secho(f"{p}: the bundle failed its parity gate ({'; '.join(b['manifest']['parity']['failures'])}); "
                        f"reported, not enforced in --quick mode (see the report)", fg="yellow")
    failed = [p for p, b in bundles.items() if not b["ok"] and not b["gate_waived"]]
    if failed:
        sys.exit(f"export failed for {failed}; see {run_dir / 'export' / 'export.log'}")


if __name__ == "__main__":
    main()
