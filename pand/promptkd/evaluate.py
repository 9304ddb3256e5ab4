"""PromptKD's evaluation: base / novel / HM accuracy of the teacher and the student from their image features against
the stored class vectors, the per-epoch validation metric and the cross-dataset evaluation.

Every metric is computed from L2-normalised features (:func:`extract_features`) and class vectors
(:func:`pand.promptkd.protocol.subset_accuracy`: images of a class subset classified among that subset). The teacher
is evaluated with its own eval transform, the student with its eval preprocessing. Validation reads only the
held-out val split's base-class images, never test.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pand.data import build_splits
from pand.data.transforms import create_transform
from pand.engine.device import autocast
from pand.engine.loaders import make_eval_loader
from pand.utils.distributed import DistInfo

from .class_vectors import class_vectors_for
from .context import PromptKDContext
from .data import cross_eval_data
from .protocol import harmonic_mean, subset_accuracy, subset_by_classes

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import TrainerCfg

__all__ = ["extract_features", "evaluate_base_novel", "validate_base", "teacher_eval", "student_eval", "cross_eval"]


@torch.no_grad()
def extract_features(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Any, batch_size: int,
                     device: torch.device, trainer_cfg: TrainerCfg, precision: str = "fp32", desc: str = "features",
                     progress: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(n(encode(x)) [N, D] fp32 CPU, labels [N] long CPU)`` over a labelled eval dataset (in order, under
    ``precision`` autocast on CUDA); empty tensors for an empty or missing dataset."""
    if dataset is None or len(dataset) == 0:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    loader = make_eval_loader(dataset, batch_size, DistInfo(), trainer_cfg, device.type)
    feats, labels = [], []
    for images, y, _ in tqdm(loader, desc=desc, disable=not progress, leave=False):
        with autocast(device, precision):
            f = encode(images.to(device, non_blocking=True))
        feats.append(F.normalize(f.float(), dim=-1).cpu())
        labels.append(torch.as_tensor(y, dtype=torch.long))
    return torch.cat(feats), torch.cat(labels)


def evaluate_base_novel(features: torch.Tensor, labels: torch.Tensor, class_vectors: torch.Tensor,
                        base: Sequence[int], novel: Sequence[int]) -> Dict[str, Any]:
    """Base / novel / HM (and all-class) accuracy in percent from precomputed features.

    Base: images of base classes classified among the base classes; novel likewise; all: every image among all
    classes (what the exported classifier does).
    """
    b, nb = subset_accuracy(features, labels, class_vectors, base)
    n, nn_ = subset_accuracy(features, labels, class_vectors, novel)
    a, na = subset_accuracy(features, labels, class_vectors, list(base) + list(novel))
    return {"base": b, "novel": n, "hm": harmonic_mean(b, n), "all": a,
            "n_base_images": nb, "n_novel_images": nn_, "n_images": na}


def _student_features(ctx: PromptKDContext, dataset: Any, desc: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """The student's normalised embeddings of ``dataset`` with its eval preprocessing."""
    return extract_features(ctx.student.encode_image, dataset.with_transform(create_transform(ctx.pp, False)),
                            int(ctx.cfg.promptkd.eval_batch_size), ctx.device, ctx.cfg.trainer,
                            ctx.cfg.trainer.precision, desc, ctx.progress)


def _teacher_features(ctx: PromptKDContext, dataset: Any, desc: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """The teacher's normalised image features of ``dataset`` with its eval transform (its ``preprocess_spec``),
    fp32."""
    teacher_tf = create_transform(ctx.teacher.preprocess_spec, False)
    return extract_features(ctx.teacher.encode_image, dataset.with_transform(teacher_tf),
                            int(ctx.cfg.teacher.batch_size), ctx.device, ctx.cfg.trainer, "fp32", desc, ctx.progress)


def validate_base(ctx: PromptKDContext) -> Optional[float]:
    """Student base-class accuracy (percent) on the held-out val split (never test); None without val images of
    base classes. The student is left in training mode."""
    val = ctx.splits.val
    if val is None:
        return None
    val_base = subset_by_classes(val, ctx.base)
    if len(val_base) == 0:
        return None
    feats, labels = _student_features(ctx, val_base, "val")
    ctx.student.train()
    return subset_accuracy(feats, labels, ctx.class_vectors.cpu(), ctx.base)[0]


def teacher_eval(ctx: PromptKDContext) -> Dict[str, Any]:
    """Teacher zero-shot base/novel/HM on the test split with the stored class vectors."""
    feats, labels = _teacher_features(ctx, ctx.splits.test, "teacher test")
    return evaluate_base_novel(feats, labels, ctx.class_vectors.cpu(), ctx.base, ctx.novel)


def student_eval(ctx: PromptKDContext, dataset: Any, class_vectors: torch.Tensor, base: Sequence[int],
                 novel: Sequence[int], desc: str) -> Dict[str, Any]:
    """Student base/novel/HM on ``dataset`` against ``class_vectors`` (the student is put in eval mode)."""
    ctx.student.eval()
    feats, labels = _student_features(ctx, dataset, desc)
    return evaluate_base_novel(feats, labels, class_vectors.cpu(), base, novel)


def cross_eval(ctx: PromptKDContext) -> Dict[str, Any]:
    """The distilled student (and the teacher) on other datasets' test splits (``promptkd.cross_eval``), with
    class vectors made the way the run's were (:func:`pand.promptkd.class_vectors.class_vectors_for`)."""
    out: Dict[str, Any] = {}
    for name in ctx.cfg.promptkd.cross_eval:
        data_cfg = cross_eval_data(str(name))
        splits = build_splits(data_cfg, cache_dir=ctx.cfg.cache_dir)
        vectors, how = class_vectors_for(ctx.teacher, splits.class_names, str(splits.template), ctx.cv_meta)
        ids = list(range(len(splits.class_names)))
        s = student_eval(ctx, splits.test, vectors, ids, [], f"cross {name}")
        feats, labels = _teacher_features(ctx, splits.test, f"teacher cross {name}")
        t = subset_accuracy(feats, labels, vectors, ids)[0]
        out[str(name)] = {"dataset": str(data_cfg.name), "num_classes": len(ids), "n_images": s["n_images"],
                          "student": s["all"], "teacher": t, "class_vectors": how}
    return out
