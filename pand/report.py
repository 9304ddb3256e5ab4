"""What ``pand-train`` tells its user: one line per epoch, a final block, ``curves.png``, and the finished-run check.

Everything printed goes through the logger ``pand.train`` (:data:`log`); ``pand-train`` attaches a handler that echoes
each message to stdout (:func:`setup_logging`), a library caller attaches its own or stays silent.

Epoch numbers: the printed lines and ``curves.png`` count epochs from 1 (``epoch 3/10`` is the third of ten, as on
the progress bars); the files (``metrics.jsonl`` ``epoch``, ``summary.json`` ``best_epoch``, checkpoint folders
``epoch_0002``, the student's metadata ``epoch``) store the 0-based index, so printed epoch = file epoch + 1.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from pand.utils.io import atomic_path, read_json

__all__ = [
    "log", "setup_logging", "CURVES_NAME", "epoch_line", "log_epoch", "final_lines", "log_final", "write_curves",
    "finished_run", "FINISHED_FILES",
]

log = logging.getLogger("pand.train")
CURVES_NAME = "curves.png"
# a run whose NSD stage completed: pand.train writes the student, then summary.json, last
FINISHED_FILES = ("student.safetensors", "summary.json")
RUN_STATE_FILE = "run.json"  # optional run-folder record {"state": "running" | "finished", ...}


class _EchoHandler(logging.Handler):
    """Echo each record with ``click.echo`` (looked up at emit time, so a redirected stdout is honoured)."""

    def emit(self, record: logging.LogRecord) -> None:
        import click

        try:
            click.echo(self.format(record), err=record.levelno >= logging.WARNING)
        except Exception:  # noqa: BLE001 - logging must never break training
            self.handleError(record)


def setup_logging() -> logging.Logger:
    """Make :data:`log` print bare messages (INFO and above) to stdout, once."""
    if not any(isinstance(h, _EchoHandler) for h in log.handlers):
        handler = _EchoHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _pct(v: Optional[float]) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def epoch_line(epoch: int, epochs: int, stats: Mapping[str, float], val: Optional[Mapping[str, float]],
               best_top1: float, best_epoch: int) -> str:
    """One line for a finished epoch (``epoch`` and ``best_epoch`` 0-based, printed 1-based).

    Example: ``epoch 2/10  loss 1.2345  val top-1 61.25% (best 61.25% @ epoch 2)  lr 9.8e-05  412 img/s``.
    """
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {stats.get('loss', float('nan')):.4f}"]
    if val is not None:
        best = f" (best {_pct(best_top1)} @ epoch {best_epoch + 1})" if best_epoch >= 0 else ""
        parts.append(f"val top-1 {_pct(val.get('top1'))}{best}")
    else:
        parts.append("val -")
    parts.append(f"lr {stats.get('lr', float('nan')):.2e}")
    parts.append(f"{stats.get('images_per_s', 0.0):.0f} img/s")
    return "  ".join(parts)


def log_epoch(epoch: int, epochs: int, stats: Mapping[str, float], val: Optional[Mapping[str, float]],
              best_top1: float, best_epoch: int) -> None:
    """:func:`epoch_line` through :data:`log`."""
    log.info(epoch_line(epoch, epochs, stats, val, best_top1, best_epoch))


def final_lines(summary: Mapping[str, Any], run_dir: Path, outputs: Mapping[str, Path],
                extra: Sequence[str] = ()) -> List[str]:
    """The block printed when a run ends: best epoch (1-based), val and test top-1, wall time, every output path.

    Args:
        summary: the run's ``summary.json`` content.
        run_dir: the run directory.
        outputs: ``{label: path}`` of the files the run wrote, in print order.
        extra: more lines, printed after the accuracies (e.g. a comparison with a baseline).
    """
    epochs = summary.get("epochs")
    best = summary.get("best_epoch")
    lines = [f"finished {summary.get('recipe')} on {summary.get('data')} ({summary.get('student')}) in "
             f"{float(summary.get('wall_time_s') or 0):.1f} s (training {float(summary.get('train_time_s') or 0):.1f} s, "
             f"{float(summary.get('images_per_s') or 0):.0f} img/s)"]
    if best is not None and best >= 0:
        lines.append(f"  best epoch:  {best + 1} of {epochs} (files store it 0-based: best_epoch={best})")
    lines.append(f"  val top-1:   {_pct(summary.get('val_top1'))} (best epoch)")
    n_test = summary.get("test_images") or 0
    lines.append(f"  test top-1:  {_pct(summary.get('test_top1'))}"
                 + (f" on all {n_test} test images (weights of the best epoch)" if n_test else " (no test split)"))
    lines.extend(f"  {x}" for x in extra)
    lines.append(f"  outputs in {run_dir}:")
    width = max((len(k) for k in outputs), default=0)
    lines.extend(f"    {k + ':':<{width + 1}} {p}" for k, p in outputs.items())
    lines.append(f"  next: pand-export {run_dir}")
    return lines


def log_final(summary: Mapping[str, Any], run_dir: Path, outputs: Mapping[str, Path],
              extra: Sequence[str] = ()) -> None:
    """:func:`final_lines` through :data:`log`."""
    for line in final_lines(summary, run_dir, outputs, extra):
        log.info(line)


_NOT_TERMS = {"kind", "epoch", "step", "lr", "images_per_s", "steps", "skipped_steps", "w_ce", "w_kd"}


def _term_keys(rec: Mapping[str, Any]) -> List[str]:
    """The loss terms of an epoch record: numeric keys that are not bookkeeping, weights or validation."""
    return [k for k, v in rec.items() if k not in _NOT_TERMS and not k.startswith(("coef_", "val_", "test_"))
            and isinstance(v, (int, float)) and not isinstance(v, bool)]


def write_curves(records: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Optional[Path]:
    """Plot the epoch records of ``metrics.jsonl`` to ``path`` (PNG, written atomically): loss terms, val top-1, lr.

    The x axis is the 1-based epoch (``record["epoch"] + 1``). Returns None (nothing written) when there is no epoch
    record.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = sorted((r for r in records if r.get("kind") == "epoch"), key=lambda r: int(r["epoch"]))
    if not recs:
        return None
    x = [int(r["epoch"]) + 1 for r in recs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    terms: List[str] = []
    for r in recs:
        terms += [k for k in _term_keys(r) if k not in terms]
    for k in terms:
        axes[0].plot(x, [r.get(k, float("nan")) for r in recs], marker="o", ms=3, label=k)
    axes[0].set_title("training loss (epoch mean)")
    axes[0].legend(fontsize=8)
    val = [(e, 100 * r["val_top1"]) for e, r in zip(x, recs) if r.get("val_top1") is not None]
    if val:
        axes[1].plot(*zip(*val), marker="o", ms=3, color="C2")
    axes[1].set_title("val top-1 %")
    axes[2].plot(x, [r.get("lr", float("nan")) for r in recs], marker="o", ms=3, color="C3")
    axes[2].set_title("learning rate")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def finished_run(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The ``summary.json`` of a finished run in ``run_dir``, or None when it is not finished.

    Finished: ``student.safetensors`` and ``summary.json`` exist (written last by :mod:`pand.train`) and, where the run
    folder has a ``run.json``, its ``state`` is ``finished``.
    """
    run_dir = Path(run_dir)
    if not all((run_dir / f).is_file() for f in FINISHED_FILES):
        return None
    state_file = run_dir / RUN_STATE_FILE
    try:
        if state_file.is_file() and read_json(state_file).get("state") != "finished":
            return None
        summary = read_json(run_dir / "summary.json")
    except (OSError, ValueError, AttributeError):
        return None
    return summary if isinstance(summary, dict) else None
