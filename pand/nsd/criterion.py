"""Stage NSD's loss: which terms a recipe uses and how they are weighted (thin layer over :mod:`pand.losses`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch

from pand.errors import ConfigError
from pand.losses import (
    ce_loss, clip_logits, l1_alignment, logit_kd, loss_weights, nlrd_loss, term_coefficients, text_logit_kd,
    total_loss,
)

from .model import NSDOutput

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import NSDCfg, RecipeCfg

__all__ = ["NSDCriterion", "TERMS", "LOGIT_TERMS"]

TERMS = ("ce", "l1", "kl", "nlrd")
LOGIT_TERMS = ("ce", "kd")  # recipe.distill=logits (recipe kd)


@dataclass
class NSDCriterion:
    """Loss of one training step.

    * ``use_teacher=False`` (recipe ``ce``): ``L = CE``.
    * ``distill="logits"`` (recipe ``kd``): ``L = w_ce*CE + w_kd*KD`` (:func:`pand.losses.logit_kd` of the student's
      classifier against the teacher's logits ``s0 * f_t @ A^T``).
    * otherwise ``L = w_ce*CE + (w_kd*L1 + w_kd*KL)/2 [+ nlrd_weight*nlrd_lam*NLRD]`` with
      ``(w_ce, w_kd) = loss_weights(epoch, epochs, ce_ramp)``: the reference's ramp ``w_ce = e / (8E)``, or, when
      ``ce_weight`` is set, the constant ``(ce_weight, 1 - ce_weight)`` (an ablation of the ramp).

    **Unlabelled images** (label ``< 0``, the transfer set ``data.unlabeled``): CE is computed on the labelled rows
    only (the batch sampler puts at least one in every batch); the teacher terms use every row.
    """

    epochs: int
    use_teacher: bool = True
    use_nlrd: bool = True
    distill: str = "align"
    temperature: float = 2.0
    logit_scale: float = 1.0 / 0.07
    kl_reduction: str = "batchmean"
    ce_ramp: float = 8.0
    ce_weight: Optional[float] = None
    nlrd_k: int = 3
    nlrd_weight: float = 1.0
    nlrd_lam: float = 1.0

    @classmethod
    def from_config(cls, nsd_cfg: NSDCfg, recipe_cfg: RecipeCfg) -> "NSDCriterion":
        """Build from the ``nsd`` and ``recipe`` sections of a run configuration."""
        n, r = nsd_cfg, recipe_cfg
        if n.ce_weight is not None and not 0.0 <= float(n.ce_weight) <= 1.0:
            raise ConfigError(f"nsd.ce_weight={n.ce_weight}: must be in [0, 1] (or null for the e/(ce_ramp*E) ramp)")
        return cls(
            epochs=int(n.epochs), use_teacher=bool(r.use_teacher), use_nlrd=bool(r.use_teacher and r.use_nlrd),
            distill=str(r.distill),
            temperature=float(n.temperature),
            logit_scale=float(n.logit_scale), kl_reduction=str(r.kl_reduction), ce_ramp=float(n.ce_ramp),
            ce_weight=None if n.ce_weight is None else float(n.ce_weight),
            nlrd_k=int(n.nlrd.k), nlrd_weight=float(n.nlrd.weight), nlrd_lam=float(n.nlrd.lam),
        )

    def weights(self, epoch: int) -> Tuple[float, float]:
        """``(w_ce, w_kd)`` of ``epoch``; ``(1, 0)`` for the CE baseline."""
        if not self.use_teacher:
            return 1.0, 0.0
        if self.ce_weight is not None:
            return float(self.ce_weight), 1.0 - float(self.ce_weight)
        return loss_weights(epoch, self.epochs, self.ce_ramp)

    def label_free_warning(self) -> Optional[str]:
        """A warning when the CE weight is 0 in every epoch (the ramp ``e / (ce_ramp * E)`` with ``E = 1``): the student
        would never see a label. None when some epoch trains on labels."""
        if not self.use_teacher or any(self.weights(e)[0] > 0 for e in range(self.epochs)):
            return None
        return (f"nsd.epochs={self.epochs}: the CE weight e/(nsd.ce_ramp*E) is 0 in every epoch, so the student never "
                f"sees a label (only the teacher's signal). Train for nsd.epochs >= 2, or set a constant CE weight, "
                f"e.g. nsd.ce_weight=0.5")

    def term_names(self) -> Tuple[str, ...]:
        """The terms this recipe computes, in logging order."""
        if not self.use_teacher:
            return ("ce",)
        if self.distill == "logits":
            return LOGIT_TERMS + (("nlrd",) if self.use_nlrd else ())
        return TERMS if self.use_nlrd else TERMS[:3]

    def coefficients(self, epoch: int) -> Dict[str, float]:
        """Effective coefficient of every active term in ``epoch`` (as used by :func:`pand.losses.total_loss`)."""
        coef = term_coefficients(*self.weights(epoch), self.nlrd_weight * self.nlrd_lam)
        return {k: coef[k] for k in self.term_names()}

    def terms(self, out: NSDOutput, labels: torch.Tensor, f_t: Optional[torch.Tensor],
              anchors: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The unweighted terms (``ce`` always, on the labelled rows; with a teacher ``l1`` + ``kl`` or ``kd``, and
        ``nlrd``, on every row)."""
        labelled = labels >= 0
        terms = {"ce": ce_loss(out.z, labels) if bool(labelled.all()) else ce_loss(out.z[labelled], labels[labelled])}
        if not self.use_teacher:
            return terms
        with torch.no_grad():
            l_t = clip_logits(f_t, anchors, self.logit_scale)
        if self.distill == "logits":
            terms["kd"] = logit_kd(out.z, l_t, self.temperature)
        else:
            terms["l1"] = l1_alignment(out.h, out.a_img)
            terms["kl"] = text_logit_kd(out.h, out.a_txt, f_t, anchors, self.temperature, self.logit_scale,
                                        self.kl_reduction)
        if self.use_nlrd:
            terms["nlrd"] = nlrd_loss(out.z, l_t, self.nlrd_k)
        return terms

    def __call__(self, out: NSDOutput, labels: torch.Tensor, f_t: Optional[torch.Tensor],
                 anchors: Optional[torch.Tensor], epoch: int
                 ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Dict[str, float]]:
        """``(total, unweighted terms, effective coefficient of each term)``."""
        terms = self.terms(out, labels, f_t, anchors)
        w_ce, w_kd = self.weights(epoch)
        total, coef = total_loss(terms, w_ce, w_kd, self.nlrd_weight * self.nlrd_lam)
        return total, terms, coef
