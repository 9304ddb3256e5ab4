"""VL2Lite-style alignment terms of Stage NSD: L1 image alignment and KL text-logit distillation.

See ``docs/method.md``, sections "L1 image alignment", "KL text-logit distillation" and "CE". Pure tensor math,
no state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dtype import upcast

__all__ = ["KL_REDUCTIONS", "clip_logits", "l1_alignment", "text_logit_kd", "logit_kd", "ce_loss"]

KL_REDUCTIONS = ("batchmean", "vl2lite")
S0 = 1.0 / 0.07


def clip_logits(image_feat: torch.Tensor, text_feat: torch.Tensor, logit_scale: float = S0) -> torch.Tensor:
    """CLIP-style logits ``s * f @ T^T``.

    Args:
        image_feat: ``[B, D]`` (L2-normalised) image features.
        text_feat: ``[C, D]`` (L2-normalised) class anchors.
        logit_scale: fixed scale ``s`` (the reference uses ``s0 = 1/0.07``).

    Returns:
        ``[B, C]`` logits.
    """
    if image_feat.shape[-1] != text_feat.shape[-1]:
        raise ValueError(
            f"feature dims differ: image features {tuple(image_feat.shape)} vs class anchors {tuple(text_feat.shape)}"
        )
    return logit_scale * image_feat @ text_feat.T


def l1_alignment(h: torch.Tensor, a_img: torch.Tensor) -> torch.Tensor:
    """L1 image alignment ``mean_{b,d} |h[b,d] - a_img[b,d]|`` (``nn.L1Loss``; both sides get gradients).

    Args:
        h: ``[B, D_s]`` normalised student features ``n(g)``.
        a_img: ``[B, D_s]`` aligned teacher image features ``n(MLP_img(f_t))``.

    Returns:
        A scalar tensor.
    """
    if h.shape != a_img.shape:
        raise ValueError(f"l1_alignment: shapes differ {tuple(h.shape)} vs {tuple(a_img.shape)}")
    return (h - a_img).abs().mean()


def text_logit_kd(
    student_feat: torch.Tensor,
    aligned_text: torch.Tensor,
    teacher_img_feat: torch.Tensor,
    teacher_text_feat: torch.Tensor,
    temperature: float = 2.0,
    logit_scale: float = S0,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """KL text-logit distillation, scaled by ``T^2``.

    * student ``u_s = s * h @ a_txt^T / T`` and teacher ``u_t = s * f_t @ T_anchor^T / T`` (``[B, C]``, the
      teacher side carries no gradient);
    * ``p_t = softmax(u_t)``, ``log q_s = log_softmax(u_s)``, ``KL_b = sum_c p_t (log p_t - log q_s)``;
    * ``reduction="batchmean"`` (PAND): ``T^2 * (1/B) sum_b KL_b``;
    * ``reduction="vl2lite"`` (VL2Lite: ``KLDivLoss()`` elementwise mean times ``C/2``):
      ``T^2 * [sum_{b,c} ... / (B*C)] * C/2 = T^2/(2B) * sum_b KL_b``.

    Args:
        student_feat: ``[B, D_s]`` normalised student features ``h``.
        aligned_text: ``[C, D_s]`` aligned anchors ``n(MLP_txt(T))``.
        teacher_img_feat: ``[B, D_t]`` normalised teacher image features ``f_t``.
        teacher_text_feat: ``[C, D_t]`` class anchors ``T``.
        temperature: ``T``.
        logit_scale: fixed scale ``s`` (``1/0.07``).
        reduction: ``batchmean`` or ``vl2lite``.

    Returns:
        A scalar tensor.
    """
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"unknown KL reduction '{reduction}'. Valid: {', '.join(KL_REDUCTIONS)}")
    u_s = clip_logits(student_feat, aligned_text, logit_scale) / temperature
    with torch.no_grad():
        u_t = clip_logits(teacher_img_feat, teacher_text_feat, logit_scale) / temperature
    log_q = F.log_softmax(upcast(u_s), dim=1)
    log_p = F.log_softmax(u_t.to(log_q.dtype), dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum()
    b, c = u_s.shape
    if reduction == "batchmean":
        kl = kl / b
    else:
        kl = kl / (b * c) * (c / 2.0)
    return kl * temperature * temperature


def logit_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Hinton's knowledge distillation on the student's own classifier, scaled by ``T^2``.

    ``p_t = softmax(l_t / T)`` (no gradient), ``log q_s = log_softmax(z / T)``,
    ``KD = T^2 * (1/B) sum_b sum_c p_t[b,c] (log p_t[b,c] - log q_s[b,c])``.

    Args:
        student_logits: ``[B, C]`` classifier logits ``z`` of the student.
        teacher_logits: ``[B, C]`` teacher logits ``l_t`` (e.g. ``s0 * f_t @ A^T`` against class anchors ``A``).
        temperature: ``T > 0``.

    Returns:
        A scalar tensor (float32 under AMP).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logit_kd: shapes differ {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    log_q = F.log_softmax(upcast(student_logits) / temperature, dim=1)
    with torch.no_grad():
        log_p = F.log_softmax(teacher_logits.to(log_q.dtype) / temperature, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum() / student_logits.shape[0]
    return kl * temperature * temperature


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ``mean_b [-log softmax(z_b)[y_b]]`` on ``[B, C]`` logits and ``[B]`` labels (float32 under AMP)."""
    return F.cross_entropy(upcast(logits), labels)
