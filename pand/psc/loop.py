"""Stage PSC's training loop on the shared scaffold (:mod:`pand.engine`): CoOp context vectors trained with CE on
cached teacher image features (docs/method.md, "Stage PSC").

Per batch of cached, L2-normalised image features ``f [B, D]`` the text features of all classes
``T = CoOp() [C, D]`` are recomputed through the frozen text tower and ``loss = CE(s * f @ T^T, y)``
(:mod:`pand.psc.objective`). Only ``ctx`` trains (``psc.optimizer``, SGD lr 0.002 momentum 0.9 by default; the
LR follows :func:`pand.engine.optim.cosine_lr` per epoch, with CoOp's optional constant warm-up at 1e-5; gradient
norm clipped to ``psc.grad_clip``). The epoch kept is the best on the held-out validation split (early stopping
after ``psc.patience`` epochs without improvement).

Resume, checkpoints, the non-finite policy and the selection are the run lifecycle's (:mod:`pand.engine.lifecycle`,
``resume=auto``: a checkpoint written under the same config hash is continued, one of other inputs is started over).
Outputs in ``out_dir``: ``metrics.jsonl`` (one line per epoch) and ``checkpoints/`` (per epoch: the context and the
best context; the optimiser, RNG, selection state and history).
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from pand.engine.device import grad_scaler, precision_of
from pand.engine.lifecycle import AUTO, RunLifecycle, all_skipped
from pand.engine.loaders import epoch_permutation, index_batches
from pand.engine.loop import train_one_epoch
from pand.engine.optim import build_optimizer, cosine_lr, set_lr
from pand.engine.step import optimizer_step
from pand.errors import PandError
from pand.utils.io import atomic_write_text

from .objective import accuracy, coop_logits

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PSCCfg

__all__ = ["PSCResult", "train_coop"]


@dataclass
class PSCResult:
    """What :func:`train_coop` selected: the context of the best validation epoch."""

    best_ctx: torch.Tensor
    best_epoch: int
    best_val_acc: Optional[float]  # None without a validation split
    epochs_run: int
    selection: str
    history: List[Dict[str, Any]] = field(default_factory=list)


def _write_metrics(path: Path, history: List[Dict[str, Any]]) -> None:
    """``metrics.jsonl``: one JSON line per epoch record (rewritten atomically)."""
    atomic_write_text(path, "".join(json.dumps(h) + "\n" for h in history))


#: what a user can do about a non-finite PSC loss
NONFINITE_FIX = "Lower psc.lr, keep psc.grad_clip > 0 or use teacher.precision=fp32"


def train_coop(
    model: Any,
    train: Tuple[torch.Tensor, torch.Tensor],
    val: Optional[Tuple[torch.Tensor, torch.Tensor]],
    psc_cfg: PSCCfg,
    logit_scale: float,
    out_dir: str | Path,
    seed: int = 0,
    config_hash: str = "",
    autocast: Any = None,
    amp_dtype: Optional[torch.dtype] = None,
    progress: bool = True,
    skip_nonfinite: bool = False,
) -> PSCResult:
    """Train ``model.prompt_learner.ctx`` with CE on cached features; select on ``val``.

    Args:
        model: :class:`pand.psc.prompt_learner.CoOpTextModel` on the training device.
        train: ``(features [N, D], labels [N])`` of the train split.
        val: the same for the held-out validation split (None/empty: the last epoch is kept).
        psc_cfg: the typed ``psc`` section (:class:`pand.config.schema.PSCCfg`: optimizer, lr, momentum,
            weight_decay, epochs, batch_size, warmup_epochs, patience, grad_clip).
        logit_scale: frozen ``exp`` CLIP scale.
        out_dir: where ``metrics.jsonl`` and the checkpoints (``checkpoints/``) go.
        seed: shuffling seed (epoch ``e`` uses :func:`pand.engine.loaders.epoch_permutation`, so a resumed run
            replays the same order).
        config_hash: stored with the checkpoints; a checkpoint of another hash is not continued (started over).
        autocast: callable returning the autocast context (``Teacher.autocast``); None = fp32.
        amp_dtype: autocast dtype (a GradScaler is used for fp16).
        progress: tqdm bar over epochs.
        skip_nonfinite: a step whose loss is NaN/inf is skipped (not applied), counted in the epoch record's
            ``skipped_steps`` and warned about, instead of stopping the stage (``trainer.skip_nonfinite_steps``).

    Raises:
        NonFiniteLossError: a non-finite loss (naming the epoch and step; nothing of that step is applied) unless
            ``skip_nonfinite``, or an epoch in which every step was non-finite.

    Returns:
        :class:`PSCResult` with the best context (CPU copy).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = model.prompt_learner.ctx
    device = ctx.device
    epochs, bs = int(psc_cfg.epochs), max(1, int(psc_cfg.batch_size))
    patience, clip = int(psc_cfg.patience), float(psc_cfg.grad_clip)
    warmup, base_lr = int(psc_cfg.warmup_epochs), float(psc_cfg.lr)
    opt = build_optimizer([ctx], str(psc_cfg.optimizer), base_lr, weight_decay=psc_cfg.weight_decay,
                          momentum=psc_cfg.momentum, setting="psc.optimizer")
    scaler = grad_scaler(device, precision_of(amp_dtype))
    amp = autocast if autocast is not None else (lambda: torch.autocast("cpu", enabled=False))

    xtr, ytr = train[0].to(device).float(), train[1].to(device).long()
    has_val = val is not None and val[0].shape[0] > 0
    if xtr.shape[0] == 0:
        raise PandError("Stage PSC: the train split is empty")
    if not has_val:
        warnings.warn("Stage PSC: no validation split; the last epoch is kept (no model selection)")

    life = RunLifecycle("Stage PSC", skip_nonfinite, out_dir / "checkpoints",
                        {"config_hash": config_hash, "ctx_shape": list(ctx.shape)}, AUTO,
                        {"optimizer": opt, "scaler": scaler}, NONFINITE_FIX, best_key="best_acc")
    best_ctx = ctx.detach().cpu().clone()
    history: List[Dict[str, Any]] = []
    ck = life.open()
    if ck is not None:  # the interrupted run of these inputs
        with torch.no_grad():
            ctx.copy_(ck.tensors["ctx"].to(ctx.device))
        best_ctx = ck.tensors["best_ctx"].clone()
        life.restore(ck)
        history = [h for h in ck.state["history"] if h["epoch"] < life.start]
    best = life.best

    def step(epoch: int, i: int, idx: torch.Tensor) -> Optional[Tuple[Dict[str, Any], int]]:
        x, y = xtr[idx], ytr[idx]
        with amp():
            text = model()
            logits = coop_logits(x, text.float(), logit_scale)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
        if not life.finite(loss, opt, epoch, i, lambda: f"loss = {float(loss.detach())}" + (
                "; the features hold NaN/inf" if not bool(torch.isfinite(x).all()) else "")):
            return None
        optimizer_step(loss, opt, scaler, clip=clip, params=[ctx])
        return ({"loss": float(loss.detach()) * y.numel(), "correct": int((logits.detach().argmax(1) == y).sum())},
                y.numel())

    bar = tqdm(range(life.start, epochs), desc="PSC", unit="ep", disable=not progress, leave=False)
    for epoch in bar:
        if patience > 0 and best.since >= patience:
            break
        t0 = time.time()
        lr = set_lr(opt, cosine_lr(epoch, base_lr, epochs, warmup))
        model.train()
        order = epoch_permutation(xtr.shape[0], seed, epoch).to(device)
        totals = train_one_epoch(index_batches(order, bs), lambda i, idx: step(epoch, i, idx))
        model.eval()
        seen = totals.images
        if seen == 0:
            raise all_skipped("Stage PSC", epoch, totals.skipped, "Check the features (delete the feature cache "
                                                                  "under cache_dir/features) and lower psc.lr")
        rec: Dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": totals.sums["loss"] / seen,
                               "train_acc": totals.sums["correct"] / seen, "skipped_steps": totals.skipped}
        if has_val:
            with torch.no_grad(), amp():
                rec["val_acc"] = accuracy(val[0].to(device), val[1], model().float())
            improved = best.offer(epoch, rec["val_acc"])
        else:
            best.take(epoch)  # no validation: the last epoch is kept
            improved = True
        if improved:
            best_ctx = ctx.detach().cpu().clone()
        rec.update(best_val_acc=best.value, best_epoch=best.epoch, seconds=round(time.time() - t0, 4))
        history.append(rec)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val=f"{rec.get('val_acc') or float('nan'):.3f}")
        life.save(epoch, {"ctx": ctx.detach(), "best_ctx": best_ctx}, history=history)
        _write_metrics(out_dir / "metrics.jsonl", history)
    bar.close()
    _write_metrics(out_dir / "metrics.jsonl", history)
    return PSCResult(
        best_ctx=best_ctx, best_epoch=int(best.epoch), best_val_acc=best.value,
        epochs_run=len(history), selection="best_val_acc" if has_val else "last_epoch (no validation split)",
        history=history,
    )
