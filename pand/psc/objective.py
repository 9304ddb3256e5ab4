"""Stage PSC's objective: CoOp logits of cached image features against the class text features, and top-1.

    logits = s * f @ T^T  [B, C],   s = exp(CLIP logit scale) (frozen),   loss = CE(logits, y)
"""
from __future__ import annotations

import torch

__all__ = ["coop_logits", "accuracy"]


def coop_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """``logit_scale * f @ T^T``.

    Args:
        image_features: ``[B, D]`` L2-normalised image features.
        text_features: ``[C, D]`` L2-normalised class text features.
        logit_scale: ``s = exp(CLIP logit scale)`` (a float, frozen).

    Returns:
        ``[B, C]`` logits.
    """
    return logit_scale * image_features @ text_features.t().to(image_features.dtype)


@torch.no_grad()
def accuracy(image_features: torch.Tensor, labels: torch.Tensor, text_features: torch.Tensor) -> float:
    """Top-1 accuracy of ``argmax_c f_i . T_c`` against ``labels`` (``[N, D]``, ``[N]``, ``[C, D]``); nan if N=0."""
    if image_features.shape[0] == 0:
        return float("nan")
    pred = (image_features.float() @ text_features.float().t().to(image_features.device)).argmax(dim=1)
    return float((pred.cpu() == labels.cpu()).float().mean())
