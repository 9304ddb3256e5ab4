"""Pure loss functions of Stage NSD (NLRD, L1 alignment, text-logit KD, CE) and their epoch weighting.

Each function documents its formula and shapes; nothing here holds state or reads configuration.
"""
from .kd import KL_REDUCTIONS, ce_loss, clip_logits, l1_alignment, logit_kd, text_logit_kd
from .nlrd import js_divergence_from_logits, nlrd_loss, nlrd_neighbours
from .weights import loss_weights, term_coefficients, total_loss

__all__ = [
    "KL_REDUCTIONS", "ce_loss", "clip_logits", "js_divergence_from_logits", "l1_alignment", "logit_kd", "loss_weights",
    "nlrd_loss", "nlrd_neighbours", "term_coefficients", "text_logit_kd", "total_loss",
]
