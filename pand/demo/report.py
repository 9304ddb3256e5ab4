"""The demo's report: a results table (stdout + ``report.md``) and PNG plots (training curves, latency vs batch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from pand.demo.regime import regime_sentence
from pand.nsd.metrics import read_metrics
from pand.utils.io import atomic_write_json, atomic_write_text

__all__ = ["write_report", "plot_training_curves", "plot_latency"]


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}"


def _table(header: List[str], rows: List[List[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def plot_training_curves(run_dir: Path, recipes: List[str], out: Path) -> Optional[Path]:
    """Training loss and validation top-1 per epoch for each recipe (from ``<recipe>/nsd/metrics.jsonl``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for r in recipes:
        recs = [m for m in read_metrics(run_dir / r / "nsd" / "metrics.jsonl") if m.get("kind") == "epoch"]
        if not recs:
            continue
        ep = [m["epoch"] + 1 for m in recs]
        ax_l.plot(ep, [m.get("loss") for m in recs], label=r)
        ax_a.plot(ep, [100 * m["val_top1"] if m.get("val_top1") is not None else None for m in recs], label=r)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax_l.set(title="training loss (weighted total)", xlabel="epoch")
    ax_a.set(title="validation top-1 (%)", xlabel="epoch")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_latency(rows: List[Dict[str, Any]], out: Path) -> Optional[Path]:
    """p50 latency (ms) vs batch size, one line per backend/precision (rows of ``pand-bench``'s JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[str, List] = {}
    for r in rows:
        if r.get("p50_ms") is None:
            continue
        series.setdefault(f"{r.get('backend')}/{r.get('precision')}", []).append((r["batch"], r["p50_ms"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="p50 latency (ms)", title="latency vs batch size")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _bench_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    bench = results.get("bench") or {}
    return bench.get("rows", []) if isinstance(bench, dict) else list(bench)


def write_report(run_dir: Path, results: Dict[str, Any]) -> str:
    """Write ``run_dir/report.md`` (+ plots) and return the plain-text results table for stdout."""
    run_dir = Path(run_dir)
    recipes = list((results.get("recipes") or {}).keys())
    zs = results.get("teacher_zero_shot") or {}
    psc = results.get("psc") or {}
    lines = [f"# pand demo report{' (quick mode: tiny budget, numbers are not meaningful)' if results.get('quick') else ''}",
             "", f"Total wall time: {results.get('wall_s', 0):.0f} s. Config: `{results.get('config')}`.", ""]

    gate = results.get("regime")
    if gate:
        lines += ["## Regime gate (validation only, decided before any test number)", "", regime_sentence(gate), ""]
    pre = (results.get("teacher_pretrain") or {}).get("teacher") or {}
    world = results.get("world") or {}
    lines += ["## Teacher", "",
              f"An open_clip model ({pre.get('arch', '?')}) pre-trained contrastively on the benchmark's web pool ({world.get('web_images', '?')} "
              f"captioned images of all classes, disjoint from the student's images; "
              f"{results.get('teacher_pretrain_s', 0)} s, cached), stopped when its validation zero-shot top-1 stopped "
              f"improving (best {_pct(pre.get('best_val_top1'))} at step {pre.get('best_step')} of "
              f"{pre.get('steps')}). The student has {world.get('labels_per_class')} labelled images per class. "
              "Zero-shot uses the hand-crafted template; per-attribute columns count how often the predicted class "
              "has the image's colour / wing pattern / beak.", ""]
    zrows = []
    for split in ("val", "test"):
        z = zs.get(split) or {}
        at = z.get("attributes") or {}
        zrows.append([split, _pct(z.get("all")), _pct(z.get("base")), _pct(z.get("novel")),
                      _pct(at.get("body_color")), _pct(at.get("wing_pattern")), _pct(at.get("beak_shape"))])
    lines += [_table(["split", "top-1 all", "base (among base)", "novel (among novel)", "colour", "wing", "beak"],
                     zrows), ""]
    zs_psc = psc.get("zero_shot") or {}
    coop = psc.get("coop") or {}
    lines += ["## Stage PSC (CoOp anchors, all classes)", "",
              _table(["prompts", "val top-1", "test top-1"],
                     [["hand-crafted template", _pct(zs_psc.get("val")), _pct(zs_psc.get("test"))],
                      ["CoOp (learned context)", _pct(coop.get("val")), _pct(coop.get("test"))]]), ""]
    if zs_psc.get("val") is not None and coop.get("val") is not None:
        better = coop["val"] > zs_psc["val"]
        lines.append(f"CoOp {'improves on' if better else 'does NOT improve on'} the hand-crafted prompt on validation "
                     f"({_pct(coop['val'])} vs {_pct(zs_psc['val'])}).")
        lines.append("")

    rows = []
    for r in recipes:
        s = results["recipes"][r]
        g = s.get("gain_over_ce_val")
        ti = s.get("train_images") or {}
        rows.append([r, _pct(s.get("val_top1")), "" if g is None else f"{100 * g:+.1f}", _pct(s.get("test_top1")),
                     f"{ti.get('labeled', '?')} + {ti.get('unlabeled', 0)}",
                     f"{s.get('wall_time_s', s.get('wall_s', 0)):.0f}"])
    setting = results.get("setting") or {}
    init = results.get("student_init") or {}
    start = ("pre-trained with CE on the disjoint upstream set (upstream val top-1 "
             f"{_pct(init.get('upstream_val_top1'))}; the demo's stand-in for ImageNet weights)"
             if init.get("kind") == "upstream" else "random init")
    lines += ["## Students: did distillation pay?", "",
              f"Setting: {setting.get('steps') or 'a toy number of'} optimiser steps per recipe "
              f"({setting.get('schedule', '?')}x the 510-step base{', quick mode' if results.get('quick') else ''}), "
              f"student start: {start}, transfer set: {setting.get('transfer', '?')}. Same student, "
              "labelled images, seed, optimiser and number of steps for every recipe; CE trains on the labelled "
              "images only. The gain is decided on validation.", "",
              _table(["recipe", "val top-1", "gain over ce (val, points)", "test top-1",
                      "train images (labelled + unlabelled)", "wall s"], rows), ""]
    gains = {r: results["recipes"][r].get("gain_over_ce_val") for r in recipes if r != "ce"}
    for r, g in gains.items():
        if g is not None:
            lines.append(f"**{r}: distillation {'paid' if g > 0 else 'did NOT pay'}** on validation ({100 * g:+.1f} "
                         f"points over ce). One seed: the 5-seed study (`bench/distill.py`, README) gives means and "
                         f"standard deviations for every recipe and the PAND ablations.")
    lines.append("")
    pk = results.get("promptkd") or []
    if pk:
        lines += ["## PromptKD (base-to-novel, no labels; test top-1 %, base among base classes, novel among novel)", "",
                  "Pools: `reference` = the training images of all classes, labels unused, no test image (the "
                  "reference code's); `inductive` = the training images of the base classes only.", ""]
        prow = []
        for r in pk:
            pool = str(r.get("pool", "?")).upper() if r.get("transductive") else str(r.get("pool", "?"))
            if "error" in r:
                prow.append([r.get("teacher_prompts"), pool, "FAILED: " + r["error"][:80], "", "", ""])
                continue
            for who in ("teacher", "student"):
                x = r.get(who) or {}
                prow.append([r.get("teacher_prompts"), pool, who, f"{x.get('base', float('nan')):.1f}",
                             f"{x.get('novel', float('nan')):.1f}", f"{x.get('hm', float('nan')):.1f}"])
        lines.append(_table(["teacher prompts", "pool", "model", "base", "novel", "HM"], prow))
        lines.append("")

    exp_rows = []
    exports = dict(results.get("export") or {})
    if results.get("export_promptkd"):
        exports["promptkd fp32"] = results["export_promptkd"]
    for prec, b in exports.items():
        parity = (b.get("manifest") or {}).get("parity") or {}
        backends = {k: v for k, v in parity.items() if isinstance(v, dict) and "top1_agreement" in v}
        for backend, par in backends.items() or [("-", {})]:
            exp_rows.append([prec, backend, "ok" if b.get("ok") else "FAILED", _pct(par.get("top1_agreement")),
                             f"{par['max_abs']:.2e}" if par.get("max_abs") is not None else "n/a",
                             _pct(par.get("acc_ref")), _pct(par.get("acc_out")),
                             str((b.get("manifest") or {}).get("valid"))])
    if exp_rows:
        lines += ["## Export (ONNX: PAND student fp32/int8, PromptKD student fp32)", "", _table(
            ["precision", "backend", "export", "top-1 agreement vs PyTorch", "max abs logit diff", "top-1 PyTorch",
             "top-1 exported", "valid"], exp_rows), ""]
        lax = [prec for prec, b in exports.items() if b.get("gate_waived")]
        if lax:
            lines += [f"Not enforced in quick mode: the parity gate of {', '.join(lax)}. The student has trained for a "
                      f"few steps and its top-1 margins are near zero, so which side of a near tie the quantized model "
                      f"lands on is a coin toss (it varies with the CPU). `make demo` enforces every gate.", ""]

    brows = _bench_rows(results)
    if brows:
        lines += ["## Latency (pand-bench, ONNX Runtime CPU)", "",
                  _table(["backend", "precision", "batch", "p50 ms", "p99 ms", "img/s", "top-1", "agreement"],
                         [[r.get("backend"), r.get("precision"), r.get("batch"),
                           f"{r['p50_ms']:.2f}" if r.get("p50_ms") is not None else "n/a",
                           f"{r['p99_ms']:.2f}" if r.get("p99_ms") is not None else "n/a",
                           f"{r['throughput']:.0f}" if r.get("throughput") is not None else "n/a",
                           _pct(r.get("top1")), _pct(r.get("agreement"))] for r in brows]), ""]

    curves = plot_training_curves(run_dir, recipes, run_dir / "training_curves.png")
    lat = plot_latency(brows, run_dir / "latency_vs_batch.png")
    if curves or lat:
        lines += ["## Plots", ""]
        if curves:
            lines.append("![training curves](training_curves.png)")
        if lat:
            lines.append("![latency vs batch](latency_vs_batch.png)")
        lines.append("")
    text = "\n".join(lines)
    atomic_write_text(run_dir / "report.md", text)
    atomic_write_json(run_dir / "results.json", results)
    return text
