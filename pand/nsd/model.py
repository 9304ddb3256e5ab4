"""The trainable part of Stage NSD: the student plus (for KD recipes) the alignment heads, in one module.

Keeping both in one ``nn.Module`` with a single ``forward`` lets DistributedDataParallel see every
trainable parameter used in a step. The frozen teacher is *not* part of it (its features come from a
:class:`pand.models.teacher_source.TeacherSource`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from pand.models.align import AlignHeads, l2_normalize

__all__ = ["NSDOutput", "NSDModel"]


class NSDOutput(NamedTuple):
    """``z [B, C]`` logits; with heads: ``h = n(g) [B, D_s]``, ``a_img [B, D_s]``, ``a_txt [C, D_s]``."""

    z: torch.Tensor
    h: Optional[torch.Tensor] = None
    a_img: Optional[torch.Tensor] = None
    a_txt: Optional[torch.Tensor] = None


class NSDModel(nn.Module):
    """``student`` (a :class:`pand.models.students.Student`) and optional :class:`AlignHeads`."""

    def __init__(self, student: nn.Module, heads: Optional[AlignHeads] = None):
        super().__init__()
        self.student = student
        self.heads = heads

    def forward(self, x: torch.Tensor, f_t: Optional[torch.Tensor] = None,
                anchors: Optional[torch.Tensor] = None) -> NSDOutput:
        g = self.student.forward_features(x)
        z = self.student.forward_head(g)
        if self.heads is None:
            return NSDOutput(z)
        if f_t is None or anchors is None:
            raise ValueError("NSDModel with alignment heads needs teacher features and class anchors")
        a_img, a_txt = self.heads(f_t, anchors)
        return NSDOutput(z, l2_normalize(g), a_img, a_txt)
