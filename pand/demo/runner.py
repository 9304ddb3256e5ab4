"""Train several resolved run configurations side by side, each in its own single-thread ``pand-train`` process.

Used by the demo (its recipes) and ``bench/distill.py`` (the study's cells). On a 2-core CPU two single-thread
runs finish sooner than the same two runs one after the other with two threads each (the per-step work of a small
student is too fine-grained to keep two threads busy), and the numbers do not depend on it: every run is seeded
and single-threaded. A run folder that already holds a finished run of exactly the same configuration is reused;
one interrupted under the same configuration is resumed; anything else in the way is replaced.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from omegaconf import OmegaConf

from pand.config import load_config, save_config
from pand.config.schema import RunCfg
from pand.errors import PandError

__all__ = ["same_config", "train_runs"]


def same_config(run: Path, cfg: RunCfg) -> bool:
    """True when ``run/config.yaml`` holds exactly the resolved configuration ``cfg``."""
    saved = Path(run) / "config.yaml"
    if not saved.is_file():
        return False
    try:
        return OmegaConf.to_container(load_config(saved), resolve=True) == OmegaConf.to_container(cfg, resolve=True)
    except PandError:
        return False


def _train_one(cfg: RunCfg, run: Path, extra: Sequence[str], threads: int) -> Tuple[Dict[str, Any], float]:
    run = Path(run)
    if (run / "summary.json").is_file() and same_config(run, cfg):
        return json.loads((run / "summary.json").read_text()), 0.0
    resume = (run / "nsd" / "checkpoints").is_dir() and same_config(run, cfg)
    if run.exists() and not resume:
        shutil.rmtree(run)
    run.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=".pand-cfg-", dir=run.parent) as tmp:
        cfg_file = Path(tmp) / "config.yaml"
        save_config(cfg, cfg_file)
        args = [sys.executable, "-m", "pand.cli", str(cfg_file), "--run-dir", str(run), *extra]
        if resume:
            args.append("--resume")
        log = run.parent / f"{run.name}.log"
        with open(log, "a", encoding="utf-8") as f:
            f.write("$ " + " ".join(args) + "\n")
            f.flush()
            proc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise PandError(f"training {run} failed (pand-train exit {proc.returncode}); log {log}:\n{tail}")
    return json.loads((run / "summary.json").read_text()), time.time() - t0


def train_runs(items: Sequence[Tuple[Any, Path]], jobs: int = 2, extra: Sequence[str] = (),
               say: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Train (or reuse / resume) every ``(cfg, run_dir)`` of ``items``, ``jobs`` at a time.

    Each run is ``pand-train <cfg as a file> --run-dir <run_dir> [extra]`` in a subprocess with
    ``OMP_NUM_THREADS=1`` (when ``jobs > 1``); its output goes to ``<run_dir>.log``. Returns the summaries in the
    order of ``items``.

    Raises:
        PandError: a run failed (the tail of its log is in the message).
    """
    threads = 1 if jobs > 1 else int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)

    def one(item):
        cfg, run = item
        summary, secs = _train_one(cfg, Path(run), extra, threads)
        what = "reused" if secs == 0 else f"{secs:.0f} s"
        say(f"  {run}: val top-1 {100 * summary['val_top1']:.1f}  test top-1 {100 * summary['test_top1']:.1f} "
            f"({what})")
        return summary

    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        return list(pool.map(one, items))
