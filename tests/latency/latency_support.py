"""Constants and the interleaved timing helper of the latency tests (kept out of conftest.py so that test
modules can import them under a unique module name)."""
import os
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

__all__ = ["BASELINE_DIR", "IMAGE_SIZE", "env_float", "interleaved_runs", "paired_ratio"]

BASELINE_DIR = Path(__file__).resolve().parent / "baselines"
IMAGE_SIZE = 224


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def interleaved_runs(fns: Dict[str, Callable[[], object]], runs: int, iterations: int) -> Dict[str, List[float]]:
    """Per-run p50 latencies (ms) of each function over ``runs`` runs that interleave the functions, so that run
    ``i`` of every function sees about the same machine load."""
    from runtime.bench import measure

    for fn in fns.values():  # one long warm-up each (trtexec: >= 200 ms)
        measure(fn, warmup_ms=200, iterations=1, min_time=0)
    p50s: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            p50s[k].append(float(np.percentile(measure(fn, warmup_ms=20, iterations=iterations, min_time=0), 50)))
    return p50s


def paired_ratio(a: List[float], b: List[float]) -> float:
    """Median over runs of ``a[i] / b[i]``: a load-robust speed ratio of two interleaved configurations."""
    return float(np.median(np.asarray(a) / np.asarray(b)))
