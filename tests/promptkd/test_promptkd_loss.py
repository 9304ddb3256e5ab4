"""PromptKD KD loss and logits against the reference formula (float64)."""
from __future__ import annotations

import pytest
import torch

from pand.errors import ArtifactError
from pand.promptkd.loss import promptkd_kd_loss, promptkd_logits


def _reference(stu: torch.Tensor, tea: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * sum_{b,c} p_t (log p_t - log q_s) / (B*C), written out with exp/log sums, no torch KL helpers."""
    def log_softmax(z):
        m = z.max(dim=1, keepdim=True).values
        return z - m - torch.log(torch.exp(z - m).sum(dim=1, keepdim=True))

    log_p, log_q = log_softmax(tea / tau), log_softmax(stu / tau)
    return tau**2 * (torch.exp(log_p) * (log_p - log_q)).sum() / stu.numel()


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("shape", [(8, 5), (3, 17)])
def test_matches_reference_formula_float64(tau, shape):
    g = torch.Generator().manual_seed(int(tau * 10) + shape[1])
    stu = torch.randn(*shape, generator=g, dtype=torch.float64) * 20
    tea = torch.randn(*shape, generator=g, dtype=torch.float64) * 20
    got = promptkd_kd_loss(stu, tea, tau)
    assert got.dtype == torch.float64
    assert abs(got.item() - _reference(stu, tea, tau).item()) < 1e-6
    # the reference's own expression: KLDivLoss(reduction="sum") / numel * T^2
    kl = torch.nn.KLDivLoss(reduction="sum")(torch.log_softmax(stu / tau, 1), torch.softmax(tea / tau, 1))
    assert abs(got.item() - (kl * tau**2 / stu.numel()).item()) < 1e-6


def test_zero_when_equal_and_positive_otherwise():
    z = torch.randn(4, 6, dtype=torch.float64)
    assert promptkd_kd_loss(z, z.clone()).abs().item() < 1e-12
    assert promptkd_kd_loss(z, z.flip(1)).item() > 0
    # shifting logits by a per-row constant changes neither distribution
    assert promptkd_kd_loss(z + 3.0, z).abs().item() < 1e-12


def test_gradient_reaches_the_student_only():
    stu = torch.randn(4, 6, requires_grad=True)
    tea = torch.randn(4, 6, requires_grad=True)
    promptkd_kd_loss(stu, tea).backward()
    assert stu.grad is not None and stu.grad.abs().sum() > 0
    assert tea.grad is None


def test_half_precision_is_computed_in_float32():
    stu, tea = torch.randn(2, 3).half(), torch.randn(2, 3).half()
    out = promptkd_kd_loss(stu, tea)
    assert out.dtype == torch.float32
    assert abs(out.item() - promptkd_kd_loss(stu.float(), tea.float()).item()) < 1e-6


def test_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="equal shape"):
        promptkd_kd_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        promptkd_kd_loss(torch.randn(2, 3), torch.randn(2, 3), 0.0)


def test_logits_formula_and_dimension_check():
    f = torch.randn(3, 8, dtype=torch.float64)
    T = torch.nn.functional.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1)
    expected = 100.0 * (f / f.norm(dim=1, keepdim=True)) @ T.T
    torch.testing.assert_close(promptkd_logits(f, T, 100.0), expected)
    assert promptkd_logits(f, T, 1.0).abs().max().item() <= 1.0 + 1e-12  # cosine similarities
    with pytest.raises(ArtifactError, match="dimension 6 do not fit features of dimension 8"):
        promptkd_logits(f, torch.randn(5, 6, dtype=torch.float64), 1.0)
