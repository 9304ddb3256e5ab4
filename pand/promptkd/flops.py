"""Inference cost of the PromptKD teacher vs the distilled student, in GFLOPs.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add; matmuls, convolutions and
attention; elementwise ops, norms and softmax are not counted) for **one image**:

* teacher = image encoder (one image) + text encoder for all ``C`` class prompts (``C x context_length`` tokens),
  which is what a prompt-learning model (CoOp / PromptSRC) runs when it classifies without a class-vector cache;
* student = prompted image encoder + projector + ``v @ T^T`` with the pre-stored class vectors (no text encoder).

The teacher is instantiated on the ``meta`` device from its open_clip architecture (no weights, no compute), so
counting a ViT-L/14 costs nothing; the student is counted on a ``meta`` copy of the trained classifier.

Reference point (PromptKD paper, via the seed notes; quoted, not reproduced): CoOp/PromptSRC with ViT-L/14 plus
text encoder about **162.5 GFLOPs** vs PromptKD's ViT-B/16 without text encoder about **42.5 GFLOPs**. This
counter gives at 224 px (measured on the meta device with open_clip 3.3):

=============================================  ===============
ViT-L/14 image tower                            162.0 GFLOPs
ViT-L/14 text tower, per class (77 tokens)       13.3 GFLOPs
ViT-B/16 image tower, no prompts                 35.1 GFLOPs
ViT-B/16 + 4 prompt tokens (any depth)           35.9 GFLOPs
projector 512->768->768 + matmul, 100 classes    0.002 GFLOPs
=============================================  ===============

So the seed's 162.5 matches the ViT-L/14 image tower alone, and its 42.5 counts the ViT-B/16 differently from this
counter (which skips softmax, norms and elementwise ops). The prompt tokens cost the same at every depth because
they travel through every layer once appended.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional

import open_clip
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pand.models.teacher import register_model_configs

__all__ = ["count_gflops", "teacher_gflops", "student_gflops", "promptkd_gflops"]


def count_gflops(fn: Callable[[], Any]) -> float:
    """GFLOPs (1e9 FLOPs, 2 per multiply-add) of running ``fn()`` once under ``FlopCounterMode``, without grad."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return counter.get_total_flops() / 1e9


def teacher_gflops(arch: str, num_classes: int, image_size: Optional[int] = None) -> Dict[str, float]:
    """Per-image GFLOPs of an open_clip teacher: image tower, text tower over ``num_classes`` prompts, and total.

    Args:
        arch: open_clip architecture (built on the meta device, no weights).
        num_classes: ``C``.
        image_size: forced input size (None: the architecture's own).
    """
    register_model_configs()
    model = open_clip.create_model(
        arch, pretrained=None, device="meta", force_image_size=int(image_size) if image_size else None
    ).eval()
    size = model.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    x = torch.empty(1, 3, int(size[0]), int(size[1]), device="meta")
    img = count_gflops(lambda: model.encode_image(x))
    ctx = int(getattr(model, "context_length", 77) or 77)
    tokens = torch.zeros(int(num_classes), ctx, dtype=torch.long, device="meta")
    txt = count_gflops(lambda: model.encode_text(tokens)) if num_classes > 0 else 0.0
    return {"image_encoder": img, "text_encoder_all_classes": txt, "total": img + txt}


def student_gflops(classifier: nn.Module, image_size: int) -> Dict[str, float]:
    """Per-image GFLOPs of the deployable student: encoder, projector + class matmul, and total.

    Args:
        classifier: a :class:`pand.promptkd.student.PromptKDClassifier` (counted on a meta-device copy).
        image_size: square input size.
    """
    clf = copy.deepcopy(classifier).to("meta").eval()
    x = torch.empty(1, 3, int(image_size), int(image_size), device="meta")
    enc = count_gflops(lambda: clf.student.encoder(x))
    total = count_gflops(lambda: clf(x))
    return {"prompted_encoder": enc, "projector_and_matmul": total - enc, "total": total}


def promptkd_gflops(teacher_arch: str, teacher_image_size: Optional[int], classifier: nn.Module,
                    student_image_size: int) -> Dict[str, Any]:
    """Teacher vs student GFLOPs side by side (see the module docstring for what is counted)."""
    t = teacher_gflops(teacher_arch, int(classifier.num_classes), teacher_image_size)
    s = student_gflops(classifier, student_image_size)
    return {
        "teacher": t,
        "student": s,
        "teacher_over_student": t["total"] / s["total"] if s["total"] > 0 else None,
        "counter": "torch.utils.flop_counter.FlopCounterMode, 2 FLOPs per MAC, batch 1",
    }
