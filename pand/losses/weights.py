"""Epoch-dependent loss weighting of Stage NSD and the weighted total (``docs/method.md``)."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch

__all__ = ["loss_weights", "term_coefficients", "total_loss"]


def loss_weights(epoch: int, max_epochs: int, ramp: float = 8.0) -> Tuple[float, float]:
    """CE/KD weights ``w_ce = clip(e / (ramp * E), 0, 1)`` and ``w_kd = 1 - w_ce``.

    Args:
        epoch: current epoch ``e`` (0-based).
        max_epochs: ``E``.
        ramp: the reference uses 8, so CE never exceeds ``(E-1)/(8E)`` (about 12.5%).

    Returns:
        ``(w_ce, w_kd)`` as python floats.
    """
    if max_epochs <= 0 or ramp <= 0:
        raise ValueError(f"loss_weights needs max_epochs > 0 and ramp > 0 (got {max_epochs}, {ramp})")
    w_ce = min(max(epoch / (ramp * max_epochs), 0.0), 1.0)
    return w_ce, min(max(1.0 - w_ce, 0.0), 1.0)


def term_coefficients(w_ce: float, w_kd: float, nlrd_coef: float = 1.0) -> Dict[str, float]:
    """Effective coefficient of each term: ``ce: w_ce, l1: w_kd/2, kl: w_kd/2, nlrd: nlrd_coef`` (PAND, VL2Lite) and
    ``kd: w_kd`` (Hinton's logit KD of recipe ``kd``, which has no alignment terms)."""
    return {"ce": w_ce, "l1": w_kd / 2.0, "kl": w_kd / 2.0, "nlrd": nlrd_coef, "kd": w_kd}


def total_loss(
    terms: Mapping[str, torch.Tensor], w_ce: float, w_kd: float, nlrd_coef: float = 1.0
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """PAND total ``L = w_ce*CE + (w_kd*L1 + w_kd*KL)/2 + nlrd_coef*NLRD`` over the terms present (recipe ``kd``:
    ``L = w_ce*CE + w_kd*KD``).

    ``nlrd_coef`` is ``nlrd.weight * nlrd.lam`` (not ramped by ``w_kd``, as in the reference). Missing
    terms (``l1``/``kl``/``nlrd`` in the CE baseline, ``nlrd`` in VL2Lite) contribute nothing.

    Args:
        terms: unweighted scalar losses keyed ``ce``, ``l1``, ``kl``, ``nlrd``, ``kd`` (any subset).
        w_ce: CE weight.
        w_kd: weight of the L1 and KL terms (each then halved).
        nlrd_coef: NLRD coefficient.

    Returns:
        ``(total, weights)`` where ``weights`` maps every present term to its effective coefficient.
    """
    coef = term_coefficients(w_ce, w_kd, nlrd_coef)
    unknown = set(terms) - set(coef)
    if unknown:
        raise KeyError(f"unknown loss terms {sorted(unknown)}; valid: {sorted(coef)}")
    total: Optional[torch.Tensor] = None
    used = {}
    for name, value in terms.items():
        used[name] = coef[name]
        part = coef[name] * value
        total = part if total is None else total + part
    if total is None:
        raise ValueError("total_loss needs at least one term")
    return total, used
