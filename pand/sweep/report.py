"""The sweep's three reports: ``sweep.json`` (everything), ``sweep.md`` (the table sorted by latency, the Pareto
front marked, the recommendation) and ``pareto.png`` (accuracy against p50 latency, the front, the budget line)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["render_markdown", "plot_pareto", "write_reports"]


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}"


def _num(v: Optional[float], fmt: str) -> str:
    return "n/a" if v is None else format(float(v), fmt)


def _by_latency(entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return sorted(entries, key=lambda e: (e.get("p50_ms") is None, e.get("p50_ms") or 0.0, e["student"],
                                          e["precision"]))


def render_markdown(payload: Dict[str, Any]) -> str:
    """``sweep.md``: the table sorted by p50 latency (``*`` = on the Pareto front of validation top-1 vs p50), then
    the recommendation under the budget (chosen on validation top-1, test beside it) or why there is none."""
    b, tb = payload["latency_batch"], payload["throughput_batch"]
    lines = [
        "# pand-sweep", "",
        f"config `{payload['config']}` {' '.join(payload['overrides'])}".rstrip() + f"; {payload['image_size']} px; "
        f"bundles: {payload['format']}; device `{payload['device_key']}`; wall time {payload.get('wall_s', 0):.0f} s",
        "",
        f"| student | precision | val top-1 | test top-1 | params (M) | GFLOPs | p50 ms (b{b}) | p99 ms (b{b}) | "
        f"images/s (b{tb}) | Pareto | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in _by_latency(payload["entries"]):
        note = e.get("reason") or ("" if e.get("valid") is not False else "failed its export parity gate")
        lines.append(
            f"| {e['student']} | {e['precision']} | {_pct(e.get('val_top1'))} | {_pct(e.get('test_top1'))} | "
            f"{_num(e['parameters'] / 1e6 if e.get('parameters') else None, '.2f')} | "
            f"{_num(e['flops'] / 1e9 if e.get('flops') else None, '.3f')} | {_num(e.get('p50_ms'), '.2f')} | "
            f"{_num(e.get('p99_ms'), '.2f')} | {_num(e.get('throughput'), '.0f')} | "
            f"{'*' if e.get('pareto') else ''} | {note} |")
    lines += ["", "`*` = on the Pareto front of the deployable bundles (no other bundle that passed its export parity "
              "gate is both at least as accurate on validation and at least as fast at p50; a bundle marked valid: "
              "false is never on it). Accuracy: the bundle itself on the whole val / test split (runtime "
              "preprocessing)."]
    rec = payload.get("recommendation")
    if rec is not None:
        lines.append("")
        c = rec.get("chosen")
        if c is not None:
            lines.append(f"**Recommended under {rec['budget_ms']:g} ms at batch {b}:** {c['student']} {c['precision']}"
                         f" -- val top-1 {_pct(c['val_top1'])} (chosen on validation), test top-1 "
                         f"{_pct(c['test_top1'])} (reported, not used for the choice), p50 {_num(c['p50_ms'], '.2f')} "
                         f"ms: `{c['bundle']}`")
        else:
            from .run import budget_sentence

            lines.append(f"**No bundle meets the budget.** {budget_sentence(payload)}")
    return "\n".join(lines) + "\n"


def plot_pareto(payload: Dict[str, Any], path: Path, split: str = "val") -> Path:
    """``pareto.png``: ``split`` top-1 (%) against p50 latency (ms, log scale) at the latency batch, one point per
    student and precision (filled = on the front), the front as a step line, the budget as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"{split}_top1"
    pts = [e for e in payload["entries"] if e.get("p50_ms") is not None and e.get(key) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    label_offsets = {"fp32": (5, 4), "fp16": (5, -3), "int8": (5, -10)}
    for e in pts:
        x, y = float(e["p50_ms"]), 100 * float(e[key])
        ax.scatter([x], [y], marker=markers.get(e["precision"], "o"), s=50,
                   facecolors="C0" if e.get("pareto") else "none", edgecolors="C0")
        # a student's precisions sit close together: fp32's label above its point, int8's below, fp16's level
        ax.annotate(f"{e['student']} {e['precision']}", (x, y), textcoords="offset points",
                    xytext=label_offsets.get(e["precision"], (5, 4)), fontsize=7)
    front = sorted((float(e["p50_ms"]), 100 * float(e[key])) for e in pts if e.get("pareto"))
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="C0", lw=1, label="Pareto front")
    if payload.get("budget_ms") is not None:
        ax.axvline(float(payload["budget_ms"]), color="C3", ls="--", lw=1,
                   label=f"budget {payload['budget_ms']:g} ms")
    if pts and all(float(e["p50_ms"]) > 0 for e in pts):
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter

        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, 1, 2, ... instead of 2 x 10^0
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel(f"p50 latency at batch {payload['latency_batch']} (ms)")
    ax.set_ylabel(f"{split} top-1 (%)")
    ax.set_title(f"pand-sweep: {split} top-1 vs latency ({payload['format']})")
    ax.grid(alpha=0.3)
    if front or payload.get("budget_ms") is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    from pand.utils.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def write_reports(root: Path, payload: Dict[str, Any], plot_split: str = "val") -> None:
    """Write ``sweep.json``, ``sweep.md`` and ``pareto.png`` into ``root`` (atomic)."""
    from pand.utils.io import atomic_write_text

    root = Path(root)
    atomic_write_text(root / "sweep.json", json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(root / "sweep.md", render_markdown(payload))
    plot_pareto(payload, root / "pareto.png", split=plot_split)
