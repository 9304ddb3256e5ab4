"""The Backend protocol and run_batched: chunking to the backend's batch, padding a fixed batch, unpadding."""
from typing import List, Optional

import numpy as np
import pytest

from pand_runtime.backends import Backend, OrtBackend, TrtBackend, run_batched
from pand_runtime.errors import PandError


class RecordingBackend:
    """Logits = per-image pixel sums repeated over 2 classes; records every batch it is given."""

    name = "recording"
    input_name, output_name = "input", "logits"

    def __init__(self, fixed: Optional[int] = None):
        self._fixed = fixed
        self.calls: List[np.ndarray] = []

    @property
    def fixed_batch(self) -> Optional[int]:
        return self._fixed

    def run(self, x: np.ndarray) -> np.ndarray:
        assert x.flags["C_CONTIGUOUS"] and x.dtype == np.float32
        if self._fixed is not None:
            assert len(x) == self._fixed
        self.calls.append(x.copy())
        s = x.reshape(len(x), -1).sum(1)
        return np.stack([s, -s], 1)

    def describe(self):
        return {"backend": self.name}

    def close(self) -> None:
        pass


def _batch(n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.float32)[:, None, None, None] + 1) * np.ones((n, 3, 2, 2), np.float32)


def _want(x: np.ndarray) -> np.ndarray:
    s = x.reshape(len(x), -1).sum(1)
    return np.stack([s, -s], 1)


def test_the_backends_and_a_stand_in_implement_the_protocol():
    assert isinstance(RecordingBackend(), Backend)
    for cls in (OrtBackend, TrtBackend):
        assert all(callable(getattr(cls, m)) for m in ("run", "describe", "close")) and hasattr(cls, "fixed_batch")


@pytest.mark.parametrize("n", [1, 4, 5])
def test_fixed_batch_pads_the_last_chunk_and_drops_the_padding(n):
    be, x = RecordingBackend(fixed=4), _batch(n)
    out = run_batched(be, x, max_batch=32)  # a fixed batch wins over max_batch
    np.testing.assert_array_equal(out, _want(x))
    assert [len(c) for c in be.calls] == [4] * -(-n // 4)
    last, n_last = be.calls[-1], n - 4 * (len(be.calls) - 1)
    np.testing.assert_array_equal(last[:n_last], x[-n_last:])
    assert not last[n_last:].any()  # zero padding


@pytest.mark.parametrize("n,chunks", [(1, [1]), (4, [4]), (5, [4, 1])])
def test_dynamic_batch_chunks_to_max_batch_without_padding(n, chunks):
    be, x = RecordingBackend(), _batch(n)
    out = run_batched(be, x, max_batch=4)
    np.testing.assert_array_equal(out, _want(x))
    assert [len(c) for c in be.calls] == chunks
    np.testing.assert_array_equal(np.concatenate(be.calls), x)


def test_empty_batch_is_refused():
    with pytest.raises(PandError, match="empty batch"):
        run_batched(RecordingBackend(), np.zeros((0, 3, 2, 2), np.float32), 4)
