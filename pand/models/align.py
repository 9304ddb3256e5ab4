"""Alignment heads of Stage NSD (the reference's ``AlignNet``; ``docs/method.md``, "Modules and shapes").

Two separate 2-layer MLPs ``Linear(D_t -> D_s) -> ReLU -> Linear(D_s -> D_s)`` map the teacher's image
features and class anchors into the student's feature space; outputs are L2-normalised. They are trained
together with the student and dropped at export (inference needs only the student).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["AlignHeads", "l2_normalize", "mlp_head"]


def l2_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """``n(x) = x / (||x||_2 + eps)`` along the last dimension (the reference's normalisation).

    Half-precision inputs (AMP) are promoted to float32 first, so the unit vectors are accurate.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def mlp_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear(in_dim -> out_dim) -> ReLU -> Linear(out_dim -> out_dim)``."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim))


class AlignHeads(nn.Module):
    """``MLP_img`` and ``MLP_txt``: teacher space ``D_t`` -> student space ``D_s``, L2-normalised outputs.

    Args:
        teacher_dim: ``D_t`` (the teacher's ``embed_dim``).
        student_dim: ``D_s`` (the student's pooled-feature dim).
    """

    def __init__(self, teacher_dim: int, student_dim: int):
        super().__init__()
        self.teacher_dim = int(teacher_dim)
        self.student_dim = int(student_dim)
        self.img = mlp_head(self.teacher_dim, self.student_dim)
        self.txt = mlp_head(self.teacher_dim, self.student_dim)

    def align_image(self, f_t: torch.Tensor) -> torch.Tensor:
        """``a_img = n(MLP_img(f_t))``: ``[B, D_t] -> [B, D_s]``."""
        return l2_normalize(self.img(f_t))

    def align_text(self, anchors: torch.Tensor) -> torch.Tensor:
        """``a_txt = n(MLP_txt(T))``: ``[C, D_t] -> [C, D_s]``."""
        return l2_normalize(self.txt(anchors))

    def forward(self, f_t: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_img [B, D_s], a_txt [C, D_s])``."""
        if f_t.shape[-1] != self.teacher_dim or anchors.shape[-1] != self.teacher_dim:
            raise ValueError(
                f"alignment heads expect teacher dim {self.teacher_dim}; got image features {tuple(f_t.shape)} "
                f"and anchors {tuple(anchors.shape)}"
            )
        return self.align_image(f_t), self.align_text(anchors)
