"""PromptKD loss and logits (``docs/method.md``, "PromptKD"). Pure tensor math, no state, no labels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pand.errors import ArtifactError

__all__ = ["promptkd_logits", "promptkd_kd_loss"]


def promptkd_logits(
    features: torch.Tensor, class_vectors: torch.Tensor, logit_scale: float | torch.Tensor
) -> torch.Tensor:
    """CLIP logits against pre-stored class vectors: ``l = s * n(f) @ T^T``.

    ``n(f) = f / max(||f||_2, 1e-12)``; ``T`` is used as given (the stored vectors are already L2-normalised).

    Args:
        features: ``[B, D]`` image features (projector output for the student, image embedding for the teacher).
        class_vectors: ``[C, D]`` teacher class vectors.
        logit_scale: ``s`` (``exp`` of the CLIP logit scale, about 100 for pretrained CLIP).

    Returns:
        ``[B, C]`` logits.

    Raises:
        ArtifactError: the feature and class-vector dimensions differ.
    """
    if features.shape[-1] != class_vectors.shape[-1]:
        raise ArtifactError(
            f"class vectors of dimension {class_vectors.shape[-1]} do not fit features of dimension "
            f"{features.shape[-1]} (shapes {tuple(class_vectors.shape)} vs {tuple(features.shape)}). The class vectors "
            f"must come from the same teacher whose embed_dim sets the projector output."
        )
    v = F.normalize(features, dim=-1, eps=1e-12)
    return logit_scale * v @ class_vectors.to(v.dtype).T


def promptkd_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """PromptKD's label-free KD term.

    ``L = tau^2 * sum_{b,c} p_t[b,c] * (log p_t[b,c] - log q_s[b,c]) / (B * C)`` with
    ``p_t = softmax(l_t / tau)`` and ``log q_s = log_softmax(l_s / tau)`` over the class axis, i.e.
    ``KLDivLoss(reduction='sum')`` divided by the number of logits ``B * C`` (a per-element mean, not
    ``batchmean``). The teacher side carries no gradient. Half-precision inputs are computed in float32;
    float64 inputs stay float64. ``KD_WEIGHT`` is applied by the caller.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]`` (detached here).
        temperature: ``tau`` (the reference uses 1).

    Returns:
        A scalar tensor.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(
            f"promptkd_kd_loss needs [B, C] logits of equal shape, got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"promptkd.temperature must be > 0, got {temperature}")
    s, t = student_logits, teacher_logits.detach()
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    t = t.to(s.dtype)
    log_q = F.log_softmax(s / temperature, dim=1)
    log_p = F.log_softmax(t / temperature, dim=1)
    kl = F.kl_div(log_q, log_p, reduction="sum", log_target=True)
    return kl * (temperature**2) / s.numel()
