"""``pand-bench --compare``: the rows of this run against a previous run's JSON (regressions, changed models)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .bench_rows import BenchRow
from .errors import PandError

__all__ = ["compare_rows", "read_baseline"]


def _baseline_row(r: Dict[str, Any]) -> BenchRow:
    return BenchRow(**{k: v for k, v in r.items() if k in BenchRow.__dataclass_fields__ and k != "details"})


def _match(r: BenchRow, by_model: Dict[str, Dict[str, Any]], by_name: Dict[str, Dict[str, Any]],
           base_rows: Sequence[BenchRow]) -> Optional[Dict[str, Any]]:
    """The baseline row of ``r``: same model file (sha256), backend, precision and batch; else the row of the same
    folder name (a different model there is reported by the caller); a bundle that failed to load (backend and
    model unknown) matches the baseline row of its folder name, precision and batch."""
    if r.model_key is not None and r.model_key in by_model:
        return by_model[r.model_key]
    if r.key in by_name:
        return by_name[r.key]
    if r.status != "ok" and not r.model_sha256:
        for b in base_rows:
            if (b.name, b.precision, b.batch) == (r.name, r.precision, r.batch):
                return by_name[b.key]
    return None


def compare_rows(rows: Sequence[BenchRow], baseline: Dict[str, Any], tolerance: float = 0.15,
                 acc_tolerance: float = 0.01) -> List[str]:
    """Problems of ``rows`` against a previous ``pand-bench`` JSON (``{"rows": [...]}``), one string each naming
    the row: p50 above ``(1 + tolerance) x`` baseline, top-1 more than ``acc_tolerance`` below, a failure where
    the baseline row was ok, a folder that now holds a different model (sha256) than the baseline row, and, when no
    row of this run has a baseline row at all, one line saying that nothing was compared. Rows are matched on the
    model file's sha256 + backend + precision + batch (see :func:`_match`); rows without a baseline row are skipped
    as long as at least one row was compared."""
    raw = [r for r in baseline.get("rows", []) if isinstance(r, dict)]
    base_rows = [_baseline_row(r) for r in raw]
    by_model = {b.model_key: r for b, r in zip(base_rows, raw) if b.model_key is not None}
    by_name = {b.key: r for b, r in zip(base_rows, raw)}
    out = []
    compared = 0
    for r in rows:
        b = _match(r, by_model, by_name, base_rows)
        if b is None:
            continue
        compared += 1
        if r.model_sha256 and b.get("model_sha256") and b["model_sha256"] != r.model_sha256:
            out.append(f"{r.key}: a different model than in the baseline (sha256 {r.model_sha256[:12]} vs "
                       f"{str(b['model_sha256'])[:12]}); latency and accuracy are not comparable: record a new "
                       f"baseline for this model")
            continue
        if r.status != "ok":
            if b.get("status") == "ok":
                out.append(f"{r.key}: failed ({r.reason}) but passed in the baseline")
            continue
        if b.get("p50_ms") and r.p50_ms is not None and r.p50_ms > b["p50_ms"] * (1 + tolerance):
            out.append(f"{r.key}: p50 {r.p50_ms:.2f} ms vs baseline {b['p50_ms']:.2f} ms "
                       f"(+{r.p50_ms / b['p50_ms'] - 1:.0%} > {tolerance:.0%})")
        if b.get("top1") is not None and r.top1 is not None and r.top1 < b["top1"] - acc_tolerance:
            out.append(f"{r.key}: top-1 {r.top1:.2%} vs baseline {b['top1']:.2%} (drop > {acc_tolerance:.2%})")
    if rows and not compared:
        have = ", ".join(sorted(b.key for b in base_rows)[:4]) or "none"
        out.append(f"no row of this run matches a row of the baseline (this run: "
                   f"{', '.join(r.key for r in rows[:4])}; baseline: {have}): nothing was compared. Benchmark the "
                   f"same bundles, backend and batch sizes, or record a new baseline")
    return out


def read_baseline(path: Path) -> Dict[str, Any]:
    """A previous ``pand-bench`` JSON, checked: an object with a ``rows`` list. Raises :class:`PandError`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PandError(f"--compare {path} is not a readable pand-bench JSON file ({type(e).__name__}: {e}). Pass the "
                        f"--json file of an earlier pand-bench run") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise PandError(f"--compare {path} is JSON but not a pand-bench result (no 'rows' list). Pass the --json file "
                        f"of an earlier pand-bench run")
    return data
