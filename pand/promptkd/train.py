"""PromptKD's student distillation loop on the training scaffold (:mod:`pand.engine`).

Per epoch ``e`` (:func:`fit`): the LR :func:`pand.promptkd.protocol.promptkd_lr` (one constant warm-up epoch at
1e-5, then Dassl's cosine) is written with :func:`pand.engine.optim.set_lr`; :func:`train_epoch` walks the unlabeled
pool with :func:`pand.engine.loop.train_one_epoch`; the student is validated on the held-out base-class val images
(:func:`pand.promptkd.evaluate.validate_base`) and the epoch is checkpointed (:mod:`pand.promptkd.checkpoint`); fresh or
resumed run, checkpoints, the non-finite policy and the best validation epoch are the run lifecycle's
(:mod:`pand.engine.lifecycle`).

One step (:func:`train_epoch`), labels never read (the pool returns ``-1``):

* the teacher sees the student's augmented batch, re-normalised / resized to its own preprocessing
  (:class:`pand.models.teacher_source.LiveTeacher`), so its logits ``l_t = s_t * n(f_t) @ T^T`` are computed live
  against the stored class vectors ``T`` of the classes in the training logits (the text side never runs);
* ``l_s = s_s * n(projector(encoder(x))) @ T^T`` under autocast (bf16/fp16 on CUDA only, fp32 master weights);
* ``loss = kd_weight * KL(l_s/tau || l_t/tau) * tau^2 / (B*C)`` (:func:`pand.promptkd.loss.promptkd_kd_loss`);
* a non-finite loss goes to the run's non-finite policy (:meth:`pand.engine.lifecycle.RunLifecycle.finite`: stop,
  nothing of the step applied, or skip and count it with ``trainer.skip_nonfinite_steps=true``); otherwise one
  :func:`pand.engine.step.optimizer_step` (SGD or AdamW from :func:`pand.engine.optim.build_optimizer`, a grad scaler
  for fp16, no clipping).
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

import torch
from tqdm.auto import tqdm

from pand.engine.device import autocast, grad_scaler
from pand.engine.loop import EpochTotals, train_one_epoch
from pand.engine.optim import build_optimizer, set_lr
from pand.engine.lifecycle import all_skipped
from pand.engine.step import optimizer_step
from pand.models.teacher_source import LiveTeacher

from . import checkpoint
from .context import PromptKDContext
from .data import distillation_loader
from .evaluate import validate_base
from .loss import promptkd_kd_loss, promptkd_logits
from .protocol import promptkd_lr
from .student import PromptKDStudent

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PromptKDCfg

__all__ = ["build_student_optimizer", "train_epoch", "fit"]


def build_student_optimizer(pk_cfg: PromptKDCfg, student: PromptKDStudent) -> torch.optim.Optimizer:
    """``promptkd.optimizer`` (SGD | AdamW, ``promptkd.lr``/``momentum``/``weight_decay``) over the student's
    trainable parameters (prompts, projector; LayerNorms with ``train_layernorm``), in parameter order."""
    return build_optimizer(student.parameters(), str(pk_cfg.optimizer), pk_cfg.lr, weight_decay=pk_cfg.weight_decay,
                           momentum=pk_cfg.momentum, setting="promptkd.optimizer")


def train_epoch(ctx: PromptKDContext, loader: Any, source: LiveTeacher, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, epoch: int) -> Dict[str, float]:
    """Distil the student for one epoch on the pool (see the module docstring).

    Returns:
        ``{"loss": mean step loss, "lr", "steps", "skipped_steps", "images_per_s"}``.

    Raises:
        NonFiniteLossError: a non-finite loss (naming the epoch and step; the step was not applied) unless
            ``trainer.skip_nonfinite_steps``, or an epoch whose every step was skipped.
    """
    cfg, pk, dev = ctx.cfg, ctx.cfg.promptkd, ctx.device
    lr = set_lr(optimizer, promptkd_lr(epoch, float(pk.lr), int(pk.epochs), int(pk.warmup_epochs),
                                       float(pk.warmup_lr)))
    loader.sampler.set_epoch(epoch, epoch)
    source.set_epoch(epoch)
    T = ctx.class_vectors[ctx.train_ids]
    ctx.student.train()
    bar = tqdm(loader, desc=f"promptkd epoch {epoch + 1}/{pk.epochs}", disable=not ctx.progress, leave=False)

    def step(i: int, batch: Any) -> Optional[Tuple[Dict[str, float], int]]:
        images, _unused_labels, indices = batch  # pool labels are -1 placeholders
        images = images.to(dev, non_blocking=True)
        l_t = promptkd_logits(source.features(images, indices), T, ctx.teacher.logit_scale)
        with autocast(dev, cfg.trainer.precision):
            f_s = ctx.student.projector(ctx.student.encoder(images))
        l_s = promptkd_logits(f_s.float(), T, ctx.student.logit_scale)
        loss = ctx.kd_weight * promptkd_kd_loss(l_s, l_t, float(pk.temperature))
        if not ctx.life.finite(loss, optimizer, epoch, i, lambda: f"KD loss = {loss.item()}"):
            return None
        optimizer_step(loss, optimizer, scaler)
        return {"loss": float(loss.detach())}, int(images.shape[0])

    def show(i: int, values: Optional[Mapping[str, float]], totals: EpochTotals) -> None:
        if totals.steps:
            bar.set_postfix(loss=f"{totals.sums['loss'] / totals.steps:.4f}")

    totals = train_one_epoch(bar, step, show)
    if totals.steps == 0 and totals.skipped:
        raise all_skipped(ctx.life.stage, epoch, totals.skipped, checkpoint.NONFINITE_FIX)
    return {"loss": totals.sums.get("loss", 0.0) / max(totals.steps, 1), "lr": lr, "steps": totals.steps,
            "skipped_steps": totals.skipped, "images_per_s": totals.images / max(totals.seconds, 1e-9)}


def fit(ctx: PromptKDContext, resume: bool = False) -> Dict[str, Any]:
    """Train prompts + projector on the unlabeled pool; checkpoint every epoch; return the selection record.

    ``promptkd.select=last`` keeps the last epoch; ``best_val`` loads the epoch with the best base-class validation
    accuracy (the last one, with a warning, when there are no validation images of the base classes).

    Returns:
        ``{"epoch", "val", "select"}`` of the kept weights (loaded into ``ctx.student``).
    """
    cfg, pk = ctx.cfg, ctx.cfg.promptkd
    ctx.pool, loader = distillation_loader(pk, cfg.trainer, ctx.splits, ctx.pool_mode, ctx.base, ctx.pp,
                                           ctx.device.type)
    source = LiveTeacher(ctx.teacher, ctx.pp.mean, ctx.pp.std)
    optimizer = build_student_optimizer(pk, ctx.student)
    scaler = grad_scaler(ctx.device, cfg.trainer.precision)
    ctx.life = life = checkpoint.lifecycle(ctx, ctx.out_dir / "checkpoints", resume, optimizer, scaler)
    expected = checkpoint.fingerprint(ctx)
    start = checkpoint.restore(ctx, life, expected)
    select = str(pk.select)
    for epoch in range(start, int(pk.epochs)):
        stats = train_epoch(ctx, loader, source, optimizer, scaler, epoch)
        val = validate_base(ctx)
        ctx.history.append({"epoch": epoch, **stats, "val_base_acc": val})
        life.best.offer(epoch, val)
        checkpoint.save_epoch(ctx, life, epoch, expected)
    if select == "best_val":
        if life.best.epoch is None:
            warnings.warn("promptkd.select=best_val but there are no validation images of the base classes; "
                          "keeping the last epoch")
        else:
            checkpoint.load_best(ctx.student, life)
            return {"epoch": life.best.epoch, "val": life.best.value, "select": select}
    last_val = ctx.history[-1]["val_base_acc"] if ctx.history else None
    return {"epoch": int(pk.epochs) - 1, "val": last_val, "select": "last"}
