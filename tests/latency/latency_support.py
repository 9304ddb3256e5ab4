"""Constants, the interleaved timing helper and baseline selection of the latency tests (kept out of conftest.py so
that test modules can import them under a unique module name)."""
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from pand_runtime.device import identity_diff

__all__ = ["BASELINE_DIR", "IMAGE_SIZE", "env_float", "interleaved_runs", "paired_ratio", "select_baseline"]

BASELINE_DIR = Path(__file__).resolve().parent / "baselines"
IMAGE_SIZE = 224


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def interleaved_runs(fns: Dict[str, Callable[[], object]], runs: int, iterations: int) -> Dict[str, List[float]]:
    """Per-run p50 latencies (ms) of each function over ``runs`` runs that interleave the functions, so that run
    ``i`` of every function sees about the same machine load."""
    from pand_runtime.bench_timing import measure

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


def select_baseline(directory: Path, key: str, identity: Mapping[str, Any]
                    ) -> Tuple[Optional[Dict[str, Any]], Optional[Path], str]:
    """The baseline recorded for exactly this machine: ``(baseline, path, why_none)``.

    A baseline is used only when its file is ``<key>.json`` *and* the key recorded inside equals ``key``; every
    other file is reported in ``why_none`` with the key it was recorded for and the identity fields that differ
    from this machine's, so a skipped comparison says which machine the numbers belong to.
    """
    path = Path(directory) / f"{key}.json"
    notes = []
    for p in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            notes.append(f"{p.name}: unreadable ({e})")
            continue
        recorded = data.get("device_key")
        if p == path and recorded == key:
            return data, p, ""
        diff = identity_diff(data.get("identity") or {}, identity)
        fields = ", ".join(f"{k}: {a!r} there vs {b!r} here" for k, a, b in ((k, *v) for k, v in diff.items()))
        notes.append(f"{p.name} was recorded for key {recorded!r}" + (f" ({fields})" if fields else ""))
    why = f"no latency baseline for this machine (key {key!r}) in {directory}"
    return None, None, why + (": " + "; ".join(notes) if notes else "")
