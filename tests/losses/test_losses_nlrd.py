"""NLRD against two independent transcriptions of the reference semantics (float64, 1e-6)."""
import math

import pytest
import torch
import torch.nn.functional as F

from pand.losses import nlrd_loss, nlrd_neighbours


def _loop_nlrd(z, lt, k):
    """Literal, loop-based NLRD: python floats only (float64), self excluded by index, ties by lower index."""
    z = z.tolist()
    lt = lt.tolist()
    b, c = len(z), len(z[0])
    k_a = min(k, b - 1)
    if k_a == 0:
        return 0.0

    def norm(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / max(n, 1e-12) for x in v]

    def softmax(v):
        m = max(v)
        e = [math.exp(x - m) for x in v]
        s = sum(e)
        return [x / s for x in e]

    nt = [norm(r) for r in lt]
    total = 0.0
    for i in range(b):
        sims = [(sum(a * bb for a, bb in zip(nt[i], nt[j])), j) for j in range(b) if j != i]
        sims.sort(key=lambda t: (-t[0], t[1]))
        for _, j in sims[:k_a]:
            q = softmax([z[i][cc] - z[j][cc] for cc in range(c)])
            p = softmax([lt[i][cc] - lt[j][cc] for cc in range(c)])
            for cc in range(c):
                m = (p[cc] + q[cc]) / 2
                total += 0.5 * (q[cc] * math.log(q[cc] / m) + p[cc] * math.log(p[cc] / m))
    return total / (b * k_a)


def _reference_vectorised(z, lt, k):
    """The seed's NLRDLoss semantics (sorted positions 1..k, assuming self sorts first), lambda = 1."""
    b = lt.shape[0]
    t = F.normalize(lt, dim=1)
    _, idx = torch.sort(t @ t.T, descending=True)
    nb = idx[:, 1:k + 1]
    k_a = nb.size(1)
    ns = torch.stack([z.index_select(0, nb[:, i]) for i in range(k_a)], 1)
    nt = torch.stack([lt.index_select(0, nb[:, i]) for i in range(k_a)], 1)
    q = F.softmax(z.unsqueeze(1) - ns, dim=2)
    p = F.softmax(lt.unsqueeze(1) - nt, dim=2)
    log_mean = ((q + p) / 2).log()
    js = (F.kl_div(log_mean, q, reduction="sum") + F.kl_div(log_mean, p, reduction="sum")) / 2
    return js / (b * k_a)


@pytest.mark.parametrize("b", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_nlrd_matches_loop_reference(b, k):
    g = torch.Generator().manual_seed(100 * b + k)
    z = torch.randn(b, 7, generator=g, dtype=torch.float64) * 3
    lt = torch.randn(b, 7, generator=g, dtype=torch.float64) * 14.3
    got = nlrd_loss(z, lt, k=k)
    assert got.dtype == torch.float64
    assert abs(got.item() - _loop_nlrd(z, lt, k)) < 1e-6


@pytest.mark.parametrize("b,k", [(2, 1), (3, 3), (8, 3), (16, 1), (16, 5)])
def test_nlrd_matches_seed_implementation_without_ties(b, k):
    g = torch.Generator().manual_seed(b * 31 + k)
    z = torch.randn(b, 10, generator=g, dtype=torch.float64)
    lt = 14.2857 * F.normalize(torch.randn(b, 10, generator=g, dtype=torch.float64), dim=1)
    ref = _reference_vectorised(z, lt, k)
    assert torch.allclose(nlrd_loss(z, lt, k=k), ref, atol=1e-6, rtol=0)


def test_self_excluded_by_index_with_duplicates():
    g = torch.Generator().manual_seed(11)
    base = torch.randn(3, 5, dtype=torch.float64, generator=g)
    lt = torch.cat([base, base])  # samples i and i+3 are identical: cos = 1 with self AND the twin
    nb = nlrd_neighbours(lt, k=2)
    for i in range(6):
        assert i not in nb[i].tolist()
        assert nb[i, 0].item() == (i + 3) % 6  # the twin is the nearest neighbour
    z = torch.randn(6, 5, dtype=torch.float64, generator=g)
    # k=1: the twin only. The second neighbour is an exact tie between two other identical rows, which the
    # vectorised cosine and the loop's python floats may round apart by one ulp (either pick is a valid NLRD).
    assert abs(nlrd_loss(z, lt, k=1).item() - _loop_nlrd(z, lt, 1)) < 1e-6


def test_ties_broken_by_lower_index():
    lt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    assert nlrd_neighbours(lt, k=1)[0].item() == 1  # 1, 2, 3 tie (cos 0): lowest index wins
    assert nlrd_neighbours(lt, k=2)[3].tolist() == [1, 2]


def test_zero_when_student_relations_equal_teacher_and_gradients():
    lt = torch.randn(6, 4, dtype=torch.float64)
    z = lt.clone().requires_grad_(True)
    loss = nlrd_loss(z, lt, k=3)
    assert abs(loss.item()) < 1e-12
    z2 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    t2 = lt.clone().requires_grad_(True)
    loss2 = nlrd_loss(z2, t2, k=3)
    assert loss2.item() > 0
    loss2.backward()
    assert torch.isfinite(z2.grad).all() and z2.grad.abs().sum() > 0
    assert t2.grad is None  # teacher logits are a constant


def test_single_sample_gives_connected_zero():
    z = torch.randn(1, 4, requires_grad=True)
    loss = nlrd_loss(z, torch.randn(1, 4), k=3)
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad is not None


def test_extreme_logits_stay_finite_and_amp_dtype():
    z = torch.tensor([[300.0, -300.0, 0.0], [-300.0, 300.0, 0.0], [0.0, 0.0, 300.0]])
    lt = torch.tensor([[-500.0, 500.0, 0.0], [500.0, -500.0, 0.0], [0.0, 500.0, 0.0]])
    assert torch.isfinite(nlrd_loss(z, lt, k=2))
    out = nlrd_loss(torch.randn(5, 6, dtype=torch.bfloat16), torch.randn(5, 6, dtype=torch.bfloat16), k=2)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        nlrd_loss(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="k must be"):
        nlrd_loss(torch.randn(3, 4), torch.randn(3, 4), k=0)
