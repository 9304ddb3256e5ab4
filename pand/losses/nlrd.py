"""Neighbourhood logits-relation distillation (NLRD), the response part of NRKD used by PAND.

See ``docs/method.md``, section "NLRD". Pure tensor math, no state.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._dtype import upcast

__all__ = ["nlrd_neighbours", "nlrd_loss", "js_divergence_from_logits"]


def nlrd_neighbours(teacher_logits: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` most similar *other* samples of each sample, by cosine of the teacher logits.

    ``S = n(l_t) n(l_t)^T`` (``[B, B]``). Self is excluded **by index** (the diagonal is set to ``-inf``
    before ranking), so duplicated samples or ties cannot make a sample its own neighbour, unlike the
    reference, which drops sorted position 0 assuming it is self. Ties are broken by the lower sample index
    (stable descending sort). When the batch has fewer than ``k + 1`` samples, every other sample is used:
    ``k_actual = min(k, B - 1)``.

    Args:
        teacher_logits: ``[B, C]`` teacher logits (only their direction matters).
        k: neighbours wanted per sample (>= 1).

    Returns:
        ``[B, k_actual]`` long tensor, most similar first (``k_actual`` may be 0 when ``B == 1``).
    """
    if k < 1:
        raise ValueError(f"nlrd k must be >= 1, got {k}")
    b = teacher_logits.shape[0]
    k_actual = min(int(k), b - 1)
    t = F.normalize(upcast(teacher_logits.detach()), dim=1)
    sim = t @ t.T
    sim.fill_diagonal_(float("-inf"))
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    return order[:, :k_actual]


def js_divergence_from_logits(q_logits: torch.Tensor, p_logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Summed Jensen-Shannon divergence between ``Q = softmax(q_logits)`` and ``P = softmax(p_logits)``.

    ``JS = 1/2 * sum [ Q (log Q - log M) + P (log P - log M) ]`` with ``M = (P + Q) / 2``, summed over every
    element. ``log M`` is computed as ``logsumexp(log P, log Q) - log 2``, which is finite even where ``P`` or
    ``Q`` underflows (the reference takes ``log`` of ``M`` directly and can return ``inf``/``NaN`` there).

    Args:
        q_logits: any shape, softmaxed along ``dim`` (the student side; gradients flow).
        p_logits: same shape (the teacher side).
        dim: the class dimension.

    Returns:
        A scalar tensor (sum reduction).
    """
    log_q = F.log_softmax(q_logits, dim=dim)
    log_p = F.log_softmax(p_logits, dim=dim)
    log_m = torch.logsumexp(torch.stack((log_p, log_q)), dim=0) - math.log(2.0)
    q, p = log_q.exp(), log_p.exp()
    return 0.5 * ((q * (log_q - log_m)).sum() + (p * (log_p - log_m)).sum())


def nlrd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, k: int = 1) -> torch.Tensor:
    """NLRD: JS divergence between the student's and the teacher's logit *differences* to batch neighbours.

    With neighbours ``N = nlrd_neighbours(l_t, k)`` (``[B, k_a]``, ``k_a = min(k, B - 1)``):

    * ``D_s[b, m] = z_b - z_{N[b, m]}`` and ``D_t[b, m] = l_t,b - l_t,N[b, m]``, shape ``[B, k_a, C]``;
    * ``Q = softmax_c(D_s)``, ``P = softmax_c(D_t)``, ``M = (P + Q) / 2``;
    * ``loss = 1/2 * sum_{b,m,c} [Q log(Q/M) + P log(P/M)] / (B * k_a)``.

    Equals the reference ``NLRDLoss(k, lambda1=1)`` whenever self ranks first in its similarity row
    (no duplicate samples, no ties) and nothing underflows; ``lambda`` and the NLRD weight are applied by
    the caller. A batch of one sample has no neighbours and gives 0 (connected to the graph).

    Args:
        student_logits: ``[B, C]`` raw classifier output ``z`` (gradients flow).
        teacher_logits: ``[B, C]`` teacher logits ``s0 * f_t @ T^T`` (no temperature; treated as constant).
        k: neighbours per sample.

    Returns:
        A scalar tensor in the promoted floating dtype (float32 under AMP).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"nlrd_loss expects student and teacher logits of the same shape [B, C]; got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    z = upcast(student_logits)
    lt = teacher_logits.detach().to(z.dtype)
    nb = nlrd_neighbours(lt, k)
    b, k_actual = nb.shape
    if k_actual == 0:
        return z.sum() * 0.0
    d_s = z.unsqueeze(1) - z[nb]  # [B, k_a, C]
    d_t = lt.unsqueeze(1) - lt[nb]
    return js_divergence_from_logits(d_s, d_t) / (b * k_actual)
