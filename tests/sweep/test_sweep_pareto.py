"""The Pareto front and the budget choice of pand-sweep (pure functions)."""
import random

from pand.sweep.pareto import dominates, front_points, pareto_front, recommend


def check_front(points, front):
    """No point on the front is dominated by any point; every point off it is dominated by some point."""
    complete = [i for i, p in enumerate(points) if None not in p]
    for i, on in enumerate(front):
        if None in points[i]:
            assert not on
            continue
        dominated = any(dominates(points[j], points[i]) for j in complete if j != i)
        assert on != dominated, (i, points[i])


def test_front_of_a_hand_made_set():
    pts = [(0.80, 5.0), (0.70, 2.0), (0.75, 6.0), (0.60, 1.0), (0.70, 3.0), (0.80, 5.0), (None, 0.1), (0.9, None)]
    front = pareto_front(pts)
    # (0.75, 6) is beaten by (0.80, 5); (0.70, 3) by (0.70, 2); equal points are both kept; failed points never
    assert front == [True, True, False, True, False, True, False, False]
    check_front(pts, front)


def test_front_property_on_random_sets():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 12)
        pts = [(round(rng.random(), 1), round(rng.uniform(0.5, 5), 1)) for _ in range(n)]
        check_front(pts, pareto_front(pts))


def _e(val, test, p50, status="ok", valid=True):
    return {"val_top1": val, "test_top1": test, "p50_ms": p50, "status": status, "valid": valid}


def test_a_bundle_that_failed_its_parity_gate_is_off_the_front_and_pushes_nothing_off_it():
    entries = [_e(0.70, 0.7, 1.0, valid=False),  # fastest and most accurate, but not deployable as it is
               _e(0.60, 0.6, 2.0), _e(0.50, 0.5, 3.0), _e(0.65, 0.6, 4.0, status="error")]
    assert front_points(entries) == [(None, None), (0.60, 2.0), (0.50, 3.0), (None, None)]
    assert pareto_front(front_points(entries)) == [False, True, False, False]  # (0.5, 3.0) is beaten by (0.6, 2.0)
    assert pareto_front([(e["val_top1"], e["p50_ms"]) for e in entries])[:2] == [True, False]  # would have been


def test_recommendation_uses_validation_not_test():
    entries = [_e(0.60, 0.90, 1.0),   # best on TEST, within budget
               _e(0.70, 0.50, 2.0),   # best on validation within budget: the choice
               _e(0.95, 0.95, 9.0),   # most accurate but over budget
               _e(0.99, 0.99, 1.5, valid=False),  # failed its export parity gate: never recommended
               _e(0.99, 0.99, 0.5, status="error")]
    rec = recommend(entries, budget_ms=3.0)
    assert rec.met and rec.chosen == 1 and rec.fastest == 0 and rec.candidates == 3
    # choosing on test would pick entry 0: the key matters
    assert recommend(entries, 3.0, acc_key="test_top1").chosen == 0


def test_ties_go_to_the_faster_and_an_unmet_budget_names_the_fastest():
    entries = [_e(0.7, 0.7, 2.0), _e(0.7, 0.6, 1.5), _e(0.5, 0.5, 1.2)]
    assert recommend(entries, 5.0).chosen == 1
    rec = recommend(entries, 1.0)
    assert not rec.met and rec.chosen is None and rec.fastest == 2
    assert recommend([], 1.0).fastest is None
