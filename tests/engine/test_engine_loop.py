"""pand.engine.loop: the epoch loop's sums and counts, and evaluate's top-1/top-5/CE."""
from __future__ import annotations

import math

import pytest
import torch

from pand.engine.loop import evaluate, train_one_epoch


def test_train_one_epoch_sums_counts_and_calls_on_step():
    seen = []

    def step(i, batch):
        if batch is None:
            return None  # a skipped step
        return {"loss": batch * 2.0, "correct": 1}, 4

    totals = train_one_epoch([1.0, None, 3.0], step, on_step=lambda i, v, t: seen.append((i, v, t.steps)))
    assert totals.sums == {"loss": 8.0, "correct": 2}
    assert (totals.steps, totals.skipped, totals.images) == (2, 1, 8)
    assert totals.means() == {"loss": 4.0, "correct": 1.0}
    assert seen == [(0, {"loss": 2.0, "correct": 1}, 1), (1, None, 1), (2, {"loss": 6.0, "correct": 1}, 2)]
    assert totals.seconds >= 0.0


class _Fixed(torch.nn.Module):
    """Logits given per image: images are indices into a fixed logit table."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x.long().flatten()]


def test_evaluate_top1_top5_loss_and_mode_restored():
    table = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0.0, 1, 2, 3, 4, 5], [1.0, 0, 0, 0, 0, 0]])
    labels = torch.tensor([0, 0, 2])  # right at top-1; rank 6 (outside top-5); tied for 2nd (inside top-5)
    loader = [(torch.tensor([0, 1]), labels[:2], "ignored"), (torch.tensor([2]), labels[2:])]
    model = _Fixed(table).train()
    r = evaluate(model, loader, torch.device("cpu"))
    ce = torch.nn.functional.cross_entropy(table, labels, reduction="sum").item() / 3
    assert r["n"] == 3 and r["top1"] == pytest.approx(1 / 3) and r["top5"] == pytest.approx(2 / 3)
    assert math.isclose(r["loss"], ce, rel_tol=1e-6)
    assert model.training  # restored
    assert evaluate(model, None, torch.device("cpu")) is None
