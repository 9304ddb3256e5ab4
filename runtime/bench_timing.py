"""Timing of ``pand-bench``: run a call until warm, then until enough runs and seconds are timed (as trtexec does),
and the statistics of the timed latencies."""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import numpy as np

__all__ = ["measure", "latency_stats"]


def measure(fn: Callable[[], Any], warmup_ms: float = 200.0, iterations: int = 50,
            min_time: float = 3.0, warmup_calls: int = 1) -> np.ndarray:
    """Time ``fn``: warm up for at least ``warmup_ms`` and ``warmup_calls`` calls (at least one), then run until both
    ``iterations`` calls and ``min_time`` seconds are reached. Returns each timed call's latency in ms, ``[n]``.

    The one latency timer of pand: ``pand-bench``, its PyTorch rows and the INT8 search's per-step p50."""
    t_end = time.perf_counter() + warmup_ms / 1000.0
    for _ in range(max(1, int(warmup_calls))):
        fn()
    while time.perf_counter() < t_end:
        fn()
    samples: List[float] = []
    start = time.perf_counter()
    while len(samples) < iterations or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return np.asarray(samples, dtype=np.float64)


def latency_stats(samples_ms: np.ndarray, batch: int) -> Dict[str, float]:
    """p50/p90/p99/mean/std (ms), coefficient of variation ``std / mean`` and throughput
    ``batch * 1000 / mean`` (images/s) of latency samples ``[n]``."""
    s = np.asarray(samples_ms, dtype=np.float64)
    mean = float(s.mean())
    std = float(s.std(ddof=1)) if len(s) > 1 else 0.0
    return {"p50_ms": float(np.percentile(s, 50)), "p90_ms": float(np.percentile(s, 90)),
            "p99_ms": float(np.percentile(s, 99)), "mean_ms": mean, "std_ms": std, "cv": std / mean if mean else 0.0,
            "throughput": batch * 1000.0 / mean if mean else 0.0}
