"""L1 alignment, KL text-logit KD (both reductions), CE and the epoch weighting against torch.nn references."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pand.losses import ce_loss, clip_logits, l1_alignment, loss_weights, text_logit_kd, total_loss

S0 = 1 / 0.07


def _feats(b=5, c=7, ds=6, dt=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = F.normalize(torch.randn(b, ds, generator=g, dtype=torch.float64), dim=1)
    a_txt = F.normalize(torch.randn(c, ds, generator=g, dtype=torch.float64), dim=1)
    ft = F.normalize(torch.randn(b, dt, generator=g, dtype=torch.float64), dim=1)
    anchors = F.normalize(torch.randn(c, dt, generator=g, dtype=torch.float64), dim=1)
    return h, a_txt, ft, anchors


def _loop_kl(h, a_txt, ft, anchors, tau):
    """sum_b KL(p_t,b || q_s,b) with python floats."""
    total = 0.0
    for b in range(h.shape[0]):
        us = [S0 * float(h[b] @ a_txt[c]) / tau for c in range(a_txt.shape[0])]
        ut = [S0 * float(ft[b] @ anchors[c]) / tau for c in range(anchors.shape[0])]
        ls = math.log(sum(math.exp(x) for x in us))
        lt = math.log(sum(math.exp(x) for x in ut))
        total += sum(math.exp(t - lt) * ((t - lt) - (s - ls)) for s, t in zip(us, ut))
    return total


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")
@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_text_logit_kd_batchmean_and_vl2lite(tau):
    h, a_txt, ft, anchors = _feats()
    b, c = h.shape[0], a_txt.shape[0]
    kl_sum = _loop_kl(h, a_txt, ft, anchors, tau)
    got = text_logit_kd(h, a_txt, ft, anchors, temperature=tau, logit_scale=S0)
    assert abs(got.item() - tau * tau * kl_sum / b) < 1e-6
    got_v = text_logit_kd(h, a_txt, ft, anchors, temperature=tau, logit_scale=S0, reduction="vl2lite")
    assert abs(got_v.item() - tau * tau * kl_sum / (2 * b)) < 1e-6
    # same as the seed's torch.nn formulation: KLDivLoss() default 'mean' * T^2 * C/2
    u_s, u_t = S0 * h @ a_txt.T / tau, S0 * ft @ anchors.T / tau
    seed_v = nn.KLDivLoss()(F.log_softmax(u_s, 1), F.softmax(u_t, 1)) * tau * tau * c / 2
    seed_b = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(u_s, 1), F.softmax(u_t, 1)) * tau * tau
    assert torch.allclose(got_v, seed_v, atol=1e-9) and torch.allclose(got, seed_b, atol=1e-9)


def test_text_logit_kd_gradients_reach_student_side_only():
    h, a_txt, ft, anchors = (t.clone().requires_grad_(True) for t in _feats())
    text_logit_kd(h, a_txt, ft, anchors).backward()
    assert h.grad.abs().sum() > 0 and a_txt.grad.abs().sum() > 0
    assert ft.grad is None and anchors.grad is None


def test_text_logit_kd_zero_when_identical_and_bad_reduction():
    h, _, _, anchors = _feats(ds=9)
    assert abs(text_logit_kd(h, anchors, h, anchors).item()) < 1e-12
    with pytest.raises(ValueError, match="reduction"):
        text_logit_kd(h, anchors, h, anchors, reduction="sum")
    with pytest.raises(ValueError, match="feature dims differ"):
        clip_logits(torch.randn(2, 3), torch.randn(4, 5))


def test_l1_and_ce_match_torch():
    a, b = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    assert torch.allclose(l1_alignment(a, b), nn.L1Loss()(a, b))
    z, y = torch.randn(6, 5, dtype=torch.bfloat16), torch.randint(0, 5, (6,))
    out = ce_loss(z, y)
    assert out.dtype == torch.float32
    assert torch.allclose(out, F.cross_entropy(z.float(), y))
    with pytest.raises(ValueError):
        l1_alignment(a, b[:, :3])


def test_loss_weights_schedule():
    assert loss_weights(0, 300) == (0.0, 1.0)
    w_ce, w_kd = loss_weights(299, 300)
    assert abs(w_ce - 299 / 2400) < 1e-12 and abs(w_kd - (1 - 299 / 2400)) < 1e-12
    assert loss_weights(50, 10, ramp=1.0) == (1.0, 0.0)  # clipped
    assert loss_weights(-3, 10) == (0.0, 1.0)
    assert loss_weights(5, 10, ramp=1.0) == (0.5, 0.5)
    with pytest.raises(ValueError):
        loss_weights(0, 0)


def test_total_loss_formula():
    terms = {k: torch.tensor(v) for k, v in dict(ce=2.0, l1=0.5, kl=3.0, nlrd=0.25).items()}
    total, coef = total_loss(terms, w_ce=0.1, w_kd=0.9, nlrd_coef=2.0)
    assert abs(total.item() - (0.1 * 2.0 + (0.9 * 0.5 + 0.9 * 3.0) / 2 + 2.0 * 0.25)) < 1e-6
    assert coef == {"ce": 0.1, "l1": 0.45, "kl": 0.45, "nlrd": 2.0}
    total_ce, coef_ce = total_loss({"ce": terms["ce"]}, w_ce=1.0, w_kd=0.0)
    assert total_ce.item() == 2.0 and coef_ce == {"ce": 1.0}
    with pytest.raises(KeyError):
        total_loss({"feat": terms["ce"]}, 1.0, 0.0)


def test_logit_kd_matches_a_float64_rederivation():
    from pand.losses import logit_kd

    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 7, generator=g, requires_grad=True)
    lt = 4 * torch.randn(5, 7, generator=g)
    for t in (1.0, 2.0, 4.0):
        got = logit_kd(z, lt, t)
        p = torch.softmax(lt.double() / t, 1)
        q = torch.log_softmax(z.detach().double() / t, 1)
        want = t * t * (p * (p.log() - q)).sum(1).mean()
        assert abs(got.item() - want.item()) < 1e-6
    got.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert logit_kd(lt.clone(), lt, 2.0).item() == pytest.approx(0.0, abs=1e-6)  # identical logits: no loss
    with pytest.raises(ValueError, match="shapes"):
        logit_kd(z, lt[:, :3], 2.0)
