"""The one parity routine (exporter, pand-engine, INT8 search) and the one latency timer (pand-bench, INT8 search)."""
import numpy as np

from pand_runtime.bench_timing import measure
from pand_runtime.metrics import TOLERANCES
from pand_runtime.parity import backend_parity


class _Fixed:
    """A backend returning given logits, batch by batch (records the batch sizes it was called with)."""

    fixed_batch = None

    def __init__(self, logits):
        self.logits, self.calls, self.i = logits, [], 0

    def run(self, x):
        self.calls.append(len(x))
        out = self.logits[self.i:self.i + len(x)]
        self.i += len(x)
        return out


def test_backend_parity_judges_the_backends_logits_against_the_reference():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((10, 5)).astype(np.float32)
    labels = ref.argmax(1)
    x = np.zeros((10, 3, 4, 4), np.float32)
    be = _Fixed(ref.copy())
    res, rec = backend_parity(be, x, ref, labels, TOLERANCES["fp32"], max_batch=4)
    assert be.calls == [4, 4, 2] and rec["passed"] and rec["failures"] == [] and res.top1_agreement == 1.0
    assert rec["tolerance"] == TOLERANCES["fp32"].to_dict() and rec["acc_ref"] == 1.0
    bad = ref.copy()
    bad[0] = -bad[0]  # one image's top-1 flips
    res, rec = backend_parity(_Fixed(bad), x, ref, labels, TOLERANCES["fp32"], max_batch=32)
    assert not rec["passed"] and rec["failures"] and res.top1_agreement == 0.9


def test_backend_parity_of_no_images_runs_nothing():
    be = _Fixed(np.zeros((0, 3), np.float32))
    res, rec = backend_parity(be, np.zeros((0, 3, 4, 4), np.float32), np.zeros((0, 3), np.float32), None,
                              TOLERANCES["fp32"], 8, num_classes=3)
    assert be.calls == [] and res.n == 0


def test_measure_warms_up_for_the_calls_asked_then_times_the_iterations():
    calls = []
    samples = measure(lambda: calls.append(1), warmup_ms=0.0, iterations=4, min_time=0.0, warmup_calls=3)
    assert len(samples) == 4 and len(calls) == 3 + 4 and (samples >= 0).all()
    calls.clear()
    assert len(measure(lambda: calls.append(1), warmup_ms=0.0, iterations=2, min_time=0.0)) == 2 and len(calls) == 3
