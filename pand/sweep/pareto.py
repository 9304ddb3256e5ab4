"""The accuracy/latency trade-off of a sweep: the Pareto front and the choice under a latency budget (pure)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

__all__ = ["dominates", "pareto_front", "front_points", "Recommendation", "recommend"]

Point = Tuple[Optional[float], Optional[float]]  # (accuracy: higher is better, latency ms: lower is better)


def dominates(a: Point, b: Point) -> bool:
    """``a`` dominates ``b``: ``acc_a >= acc_b`` and ``lat_a <= lat_b`` with at least one strict."""
    (acc_a, lat_a), (acc_b, lat_b) = a, b
    return acc_a >= acc_b and lat_a <= lat_b and (acc_a > acc_b or lat_a < lat_b)


def pareto_front(points: Sequence[Point]) -> List[bool]:
    """Which points are on the Pareto front of (maximise accuracy, minimise latency).

    Args:
        points: ``[(accuracy, latency_ms)]``; a point with a None coordinate (a failed measurement) is never on the
            front and dominates nothing.

    Returns:
        ``front[i]`` is True iff no other complete point dominates point ``i`` (:func:`dominates`). Equal points are
        all on the front. O(n^2), n = students x precisions.
    """
    ok = [p[0] is not None and p[1] is not None for p in points]
    return [ok[i] and not any(ok[j] and j != i and dominates(points[j], points[i]) for j in range(len(points)))
            for i in range(len(points))]


@dataclass
class Recommendation:
    """The outcome of :func:`recommend`: ``chosen`` is None when no candidate meets the budget."""

    budget_ms: float
    chosen: Optional[int]  # index into the entries
    fastest: Optional[int]  # the fastest candidate (lowest latency), met or not
    candidates: int  # how many entries were eligible (status ok, valid, measured)

    @property
    def met(self) -> bool:
        return self.chosen is not None


def _eligible(e: Mapping[str, Any], acc_key: str, lat_key: str) -> bool:
    return e.get("status") == "ok" and e.get("valid") is not False and e.get(acc_key) is not None \
        and e.get(lat_key) is not None


def front_points(entries: Sequence[Mapping[str, Any]], acc_key: str = "val_top1",
                 lat_key: str = "p50_ms") -> List[Point]:
    """The ``(accuracy, latency)`` points of :func:`pareto_front` for sweep entries: an entry that is not eligible
    (failed, not measured, or a bundle that failed its export parity gate: not deployable as it is) becomes
    ``(None, None)``, so it is never on the front and pushes no deployable bundle off it."""
    return [(e[acc_key], e[lat_key]) if _eligible(e, acc_key, lat_key) else (None, None) for e in entries]


def recommend(entries: Sequence[Mapping[str, Any]], budget_ms: float, acc_key: str = "val_top1",
              lat_key: str = "p50_ms") -> Recommendation:
    """The most accurate entry on **validation** whose latency is within ``budget_ms``.

    Eligible: ``status == "ok"``, not ``valid is False`` (a bundle that failed its export parity gate is never
    recommended) and both numbers present. Among eligible entries with ``entry[lat_key] <= budget_ms`` the one with
    the highest ``entry[acc_key]`` wins; ties go to the lower latency, then to the earlier entry. Test accuracy is
    never read here (``acc_key`` is validation unless a caller asks otherwise).

    Returns:
        :class:`Recommendation` with the chosen index (None when nothing meets the budget) and the fastest eligible
        entry's index (None when nothing is eligible).
    """
    idx = [i for i, e in enumerate(entries) if _eligible(e, acc_key, lat_key)]
    fastest = min(idx, key=lambda i: (float(entries[i][lat_key]), i)) if idx else None
    under = [i for i in idx if float(entries[i][lat_key]) <= float(budget_ms)]
    chosen = min(under, key=lambda i: (-float(entries[i][acc_key]), float(entries[i][lat_key]), i)) if under else None
    return Recommendation(budget_ms=float(budget_ms), chosen=chosen, fastest=fastest, candidates=len(idx))
