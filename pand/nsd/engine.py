"""Stage NSD training engine: the student, its loss and its data on the shared scaffold (:mod:`pand.engine`).

``fit`` = :func:`build_models` -> :func:`build_data` -> :func:`build_optim` -> resume -> per epoch
(:func:`train_one_epoch`, :func:`evaluate` on val, checkpoint) -> one :func:`evaluate` of the best checkpoint
on test. Teacher features come from a :class:`~pand.models.teacher_source.TeacherSource`; the loss code never
knows whether they are live or cached. The epoch loop, the optimisation step, the optimiser/scheduler factory,
evaluation, and the run lifecycle (fresh-or-resume, checkpoints with RNG, the non-finite policy, the best
validation epoch: :mod:`pand.engine.lifecycle`) are the scaffold's; what is Stage NSD's own is here: the model
(student + alignment heads, built in :mod:`.build`, shared with the ``views=auto`` probe), the criterion and its
terms, the all-reduced loss values the policy checks, the metrics records and its counters.

CUDA is used when available (``trainer.accelerator``), with bf16/fp16 autocast (``trainer.precision``) and
channels-last memory. On CPU everything runs in fp32 and a resumed run continues bit-for-bit.

Not yet run on a GPU (none in the development environment): the CUDA paths (AMP, GradScaler, channels-last,
SyncBatchNorm, NCCL) and the CUDA out-of-memory message. tests/nsd/test_nsd_cuda.py (marker ``gpu``) covers AMP,
the GradScaler and channels-last and skips without a CUDA GPU.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm.auto import tqdm

from pand.config import ConfigError
from pand.engine import loop
from pand.engine.checkpoint import split_prefixed
from pand.engine.device import autocast, grad_scaler, memory_format
from pand.engine.loaders import make_eval_loader, make_train_loader, make_transfer_loader, set_loader_epoch
from pand.engine.lifecycle import Best, NonFiniteLossError, RunLifecycle, all_skipped
from pand.engine.loop import EpochTotals, evaluate
from pand.engine.step import optimizer_step
from pand.errors import ArtifactError, PandError
from pand.models.teacher_source import TeacherSource
from pand import report
from pand.utils.distributed import DistInfo, all_reduce_sum, barrier, broadcast_buffers, select_device
from pand.utils.seed import seed_everything

from .build import build_models, build_optim
from .checkpoint import load_model_tensors, model_tensors
from .criterion import NSDCriterion
from .metrics import MetricsLogger
from .model import NSDModel
from .teacher_cache import maybe_cache_teacher
from .teacher_cache_auto import record_choice, resolve_views

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import NSDCfg, RecipeCfg, RunCfg, TeacherCfg, TrainerCfg

__all__ = [
    "NonFiniteLossError", "Loaders", "NSDContext", "NSDResult", "StepHook", "build_models", "build_data",
    "build_optim", "train_one_epoch", "evaluate", "fit",
]

StepHook = Callable[[int, int], None]  # (epoch, step within the epoch) after every optimiser step


@dataclass
class Loaders:
    train: Any
    val: Any
    test: Any
    per_device_batch: int


@dataclass
class NSDContext:
    """Everything one NSD run holds (built by :func:`fit`)."""

    cfg: RunCfg
    out_dir: Path
    device: torch.device
    dist: DistInfo
    model: NSDModel  # the raw module (checkpoints, evaluation)
    train_model: nn.Module  # what the step calls (DDP / compiled wrapper of ``model``)
    criterion: NSDCriterion
    loaders: Loaders
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    life: RunLifecycle  # resume, checkpoints, the non-finite policy, the best validation epoch
    source: Optional[TeacherSource] = None
    anchors: Optional[torch.Tensor] = None
    logger: Optional[MetricsLogger] = None
    global_step: int = 0
    train_time: float = 0.0
    images_seen: int = 0
    last_terms: Dict[str, float] = field(default_factory=dict)
    teacher_cache: Optional[Dict[str, Any]] = None  # how nsd.teacher_cache.views was resolved (auto: the choice)


@dataclass
class NSDResult:
    """What :func:`fit` hands back to :mod:`pand.train`."""

    best_epoch: int
    val_top1: Optional[float]
    test_top1: Optional[float]
    test: Optional[Dict[str, float]]
    final_terms: Dict[str, float]
    train_time_s: float
    images_per_s: float
    student_state: Dict[str, torch.Tensor]
    epochs: int
    teacher_cache: Optional[Dict[str, Any]] = None  # views used and, for views=auto, the measured choice


# --------------------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------------------
def _wrap_for_training(model: NSDModel, trainer_cfg: TrainerCfg, dist: DistInfo, device: torch.device) -> nn.Module:
    """SyncBatchNorm + DDP when distributed (SyncBN only on CUDA), then optional ``torch.compile``."""
    wrapped: nn.Module = model
    if dist.distributed:
        if device.type == "cuda" and trainer_cfg.sync_batchnorm:
            model.student = nn.SyncBatchNorm.convert_sync_batchnorm(model.student)
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if trainer_cfg.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def build_data(nsd_cfg: NSDCfg, trainer_cfg: TrainerCfg, splits, dist: DistInfo, device: torch.device) -> Loaders:
    """Loaders over ``splits`` (datasets with transforms attached); the global batch is split across ranks.

    With a transfer set (``data.unlabeled``) training runs over :meth:`DataSplits.transfer_set` with a fixed number
    of labelled images per batch (``nsd.labeled_fraction``; :func:`pand.engine.loaders.make_transfer_loader`)."""
    global_batch = int(nsd_cfg.batch_size)
    if global_batch < dist.world_size:
        raise ConfigError(f"nsd.batch_size={global_batch} is smaller than the number of devices ({dist.world_size})")
    if global_batch % dist.world_size:
        warnings.warn(f"nsd.batch_size={global_batch} is not divisible by {dist.world_size} devices; "
                      f"using {global_batch // dist.world_size} per device")
    per_device = global_batch // dist.world_size
    t = trainer_cfg
    if _has_transfer_set(splits):
        train = make_transfer_loader(splits.transfer_set(), len(splits.train), per_device, int(t.seed), dist, t,
                                     device.type, nsd_cfg.labeled_fraction)
    else:
        train = make_train_loader(splits.train, per_device, int(t.seed), dist, t, device.type)
    val = make_eval_loader(splits.val, per_device, dist, t, device.type)
    test = make_eval_loader(splits.test, per_device, dist, t, device.type)
    return Loaders(train, val, test, per_device)


def _has_transfer_set(splits) -> bool:
    unlabeled = getattr(splits, "unlabeled", None)
    return unlabeled is not None and len(unlabeled) > 0


def _train_set(splits):
    """The images Stage NSD trains on: the transfer set (labelled, then unlabelled) or the labelled train split."""
    return splits.transfer_set() if _has_transfer_set(splits) else splits.train


# --------------------------------------------------------------------------------------------------------------
# one epoch / evaluation
# --------------------------------------------------------------------------------------------------------------
def _bad_terms(ctx: NSDContext, names: List[str], values: torch.Tensor, f_t) -> str:
    """What a non-finite NSD step held: the first bad term, whether the teacher features were to blame, all terms."""
    bad = [n for n, v in zip(names, values.tolist()) if not math.isfinite(v)]
    term = next((n for n in bad if n != "loss"), bad[0])
    where = "teacher features are non-finite; " if f_t is not None and not torch.isfinite(f_t).all() else ""
    return (f"global step {ctx.global_step}: term '{term}' = {values[names.index(term)].item()}; {where}all terms: "
            f"{dict(zip(names, values.tolist()))}")


#: what a user can do about a non-finite NSD loss
NONFINITE_FIX = "Lower nsd.lr, set nsd.grad_clip (e.g. 1.0) or use trainer.precision=fp32"


def _train_step(ctx: NSDContext, images, labels, indices, epoch: int, step: int) -> Optional[torch.Tensor]:
    """Forward, loss, finiteness check, backward and optimiser step; returns the rank-mean term values.

    A NaN/inf loss (on any rank: the values are all-reduced, so every rank decides alike) goes to the run's
    non-finite policy (:meth:`pand.engine.lifecycle.RunLifecycle.finite`): :class:`NonFiniteLossError` naming the
    step, or with ``trainer.skip_nonfinite_steps=true`` the step skipped (nothing applied, a warning) and None
    returned.
    """
    device, cfg = ctx.device, ctx.cfg
    images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format(device,
                                                                                        cfg.trainer.channels_last))
    labels = labels.to(device, non_blocking=True)
    f_t = ctx.source.features(images, indices) if ctx.source is not None else None
    with autocast(device, cfg.trainer.precision):
        out = ctx.train_model(images, f_t, ctx.anchors)
    total, terms, _ = ctx.criterion(out, labels, f_t, ctx.anchors, epoch)
    names = ["loss", *terms]
    values = torch.stack([total.detach().float(), *(t.detach().float() for t in terms.values())])
    values = all_reduce_sum(values, ctx.dist) / ctx.dist.world_size
    if not ctx.life.finite(values, ctx.optimizer, epoch, step, lambda: _bad_terms(ctx, names, values.cpu(), f_t)):
        return None
    optimizer_step(total, ctx.optimizer, ctx.scaler, clip=cfg.nsd.grad_clip, params=ctx.model.parameters())
    return values


def train_one_epoch(ctx: NSDContext, epoch: int, step_hook: Optional[StepHook] = None) -> Dict[str, float]:
    """One pass over the training split; returns the epoch means of the total and of every term.

    Also returns ``w_ce``/``w_kd``/``coef_<term>``, ``lr``, ``images_per_s``, ``steps`` (applied) and
    ``skipped_steps`` (non-finite steps skipped with ``trainer.skip_nonfinite_steps=true``).
    """
    cfg, loader = ctx.cfg, ctx.loaders.train
    views = ctx.source.views(epoch, len(loader.dataset)) if ctx.source is not None else epoch
    if ctx.source is not None:
        ctx.source.set_epoch(epoch)
    set_loader_epoch(loader, epoch, views)
    ctx.train_model.train()
    names = ["loss", *ctx.criterion.term_names()]
    bar = tqdm(loader, desc=f"nsd {epoch + 1}/{cfg.nsd.epochs}", disable=not ctx.dist.is_main, leave=False,
               dynamic_ncols=True)
    lr = ctx.optimizer.param_groups[0]["lr"]

    def step(i: int, batch) -> Optional[Tuple[Dict[str, float], int]]:
        images, labels, indices = batch
        values = _train_step(ctx, images, labels, indices, epoch, i)
        if values is None:  # a non-finite step skipped (trainer.skip_nonfinite_steps)
            return None
        return dict(zip(names, values.cpu().double().tolist())), images.shape[0] * ctx.dist.world_size

    def on_step(i: int, rec: Optional[Mapping[str, float]], totals: EpochTotals) -> None:
        ctx.global_step += 1
        if rec is not None and (i % max(1, cfg.trainer.log_every) == 0 or i == len(loader) - 1):
            rate = totals.images / max(time.perf_counter() - totals.start, 1e-9)
            bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items()} | {"img/s": f"{rate:.0f}"}, refresh=False)
            if ctx.logger is not None:
                ctx.logger.log({"kind": "step", "epoch": epoch, "step": ctx.global_step, "lr": lr, **rec,
                                "images_per_s": rate}, step=ctx.global_step)
        if step_hook is not None:
            step_hook(epoch, i)

    totals = loop.train_one_epoch(bar, step, on_step)
    bar.close()
    ctx.train_time += totals.seconds
    ctx.images_seen += totals.images
    w_ce, w_kd = ctx.criterion.weights(epoch)
    coef = ctx.criterion.coefficients(epoch)
    if totals.steps == 0:
        raise all_skipped("Stage NSD", epoch, totals.skipped, f"{NONFINITE_FIX}, or check the teacher features")
    stats = totals.means()
    stats.update({"w_ce": w_ce, "w_kd": w_kd, **{f"coef_{k}": v for k, v in coef.items()}, "lr": lr,
                  "images_per_s": totals.images / max(totals.seconds, 1e-9), "steps": totals.steps,
                  "skipped_steps": totals.skipped})
    return stats


# --------------------------------------------------------------------------------------------------------------
# fit: checks, resume, per-epoch bookkeeping, final test
# --------------------------------------------------------------------------------------------------------------
def _check_inputs(recipe_cfg: RecipeCfg, teacher_cfg: TeacherCfg, splits, source: Optional[TeacherSource],
                  anchors: Optional[torch.Tensor]) -> None:
    """Teacher/anchor presence and dimensions against the dataset and each other."""
    if not recipe_cfg.use_teacher:
        return
    if source is None or anchors is None:
        raise PandError(f"recipe '{recipe_cfg.name}' distils from a teacher: pass a teacher source and class anchors")
    c = len(splits.class_names)
    if anchors.dim() != 2 or anchors.shape[0] != c:
        raise ArtifactError(f"class anchors have shape {tuple(anchors.shape)} but the dataset has {c} classes; "
                            f"the anchors belong to another dataset or class list: rerun Stage PSC for this data")
    if anchors.shape[1] != source.embed_dim:
        raise ArtifactError(
            f"teacher/anchor dimension mismatch: the teacher's features have dim {source.embed_dim} but the class "
            f"anchors have dim {anchors.shape[1]}; they were made with another teacher. Rerun Stage PSC with "
            f"teacher.arch={teacher_cfg.arch} or point psc.artifact at anchors of this teacher."
        )


def _restore(ctx: NSDContext) -> int:
    """Fresh or resumed (:meth:`RunLifecycle.open`): the model and NSD's bookkeeping from the last checkpoint when
    resuming; returns the first epoch to run."""
    ck = ctx.life.open()
    if ck is not None:
        load_model_tensors(ctx.model, ck.tensors)
        ctx.life.restore(ck)
        state = ck.state
        ctx.global_step, ctx.train_time, ctx.images_seen = (state["global_step"], state["train_time"],
                                                            state["images_seen"])
        ctx.last_terms = dict(state["last_terms"])
    return ctx.life.start


def _end_of_epoch(ctx: NSDContext, epoch: int, stats: Dict[str, float]) -> None:
    """Validate (every ``nsd.eval_every`` epochs and at the end), track the best epoch, log, checkpoint."""
    cfg, dist, best = ctx.cfg, ctx.dist, ctx.life.best
    broadcast_buffers(ctx.model, dist)  # rank 0's BatchNorm statistics are the ones checkpointed
    last = epoch == cfg.nsd.epochs - 1
    val = None
    if ctx.loaders.val is not None and ((epoch + 1) % max(1, cfg.nsd.eval_every) == 0 or last):
        val = evaluate(ctx.model.student, ctx.loaders.val, ctx.device, dist, cfg.trainer.precision,
                       cfg.trainer.channels_last)
    if ctx.loaders.val is None:
        best.take(epoch, -1.0)  # no validation: the last epoch is kept
    else:
        best.offer(epoch, val["top1"] if val is not None else None)
    ctx.last_terms = {k: stats[k] for k in ("loss", *ctx.criterion.term_names())}
    if dist.is_main:
        rec = {"kind": "epoch", "epoch": epoch, **stats}
        if val is not None:
            rec.update({f"val_{k}": v for k, v in val.items()})
        ctx.logger.log(rec, step=ctx.global_step)
        report.log_epoch(epoch, int(cfg.nsd.epochs), stats, val, best.value, best.epoch)
        ctx.life.save(epoch, model_tensors(ctx.model), global_step=ctx.global_step, train_time=ctx.train_time,
                      images_seen=ctx.images_seen, last_terms=ctx.last_terms)
    barrier(dist)


def _final_test(ctx: NSDContext) -> NSDResult:
    """Load the best epoch's weights and evaluate them once on the test split."""
    tensors, meta = ctx.life.best_tensors()
    load_model_tensors(ctx.model, tensors)
    cfg, best = ctx.cfg, ctx.life.best
    test = evaluate(ctx.model.student, ctx.loaders.test, ctx.device, ctx.dist, cfg.trainer.precision,
                    cfg.trainer.channels_last)
    if ctx.logger is not None and test is not None:
        ctx.logger.log({"kind": "test", "epoch": int(meta.get("epoch", best.epoch)),
                        **{f"test_{k}": v for k, v in test.items()}}, step=ctx.global_step)
    has_val = ctx.loaders.val is not None
    return NSDResult(
        best_epoch=best.epoch, val_top1=best.value if has_val else None,
        test_top1=test["top1"] if test else None, test=test, final_terms=dict(ctx.last_terms),
        train_time_s=ctx.train_time, images_per_s=ctx.images_seen / max(ctx.train_time, 1e-9),
        student_state=split_prefixed(tensors, "student"), epochs=int(cfg.nsd.epochs),
        teacher_cache=ctx.teacher_cache,
    )


def _oom_error(ctx: NSDContext) -> PandError:
    return PandError(
        f"CUDA out of memory with {ctx.loaders.per_device_batch} images per device "
        f"(nsd.batch_size={ctx.cfg.nsd.batch_size} over {ctx.dist.world_size} device(s)). Lower nsd.batch_size, use "
        f"AMP (trainer.precision=bf16 or fp16, teacher.precision=amp), or train on more devices (trainer.devices=N)."
    )


def fit(cfg: RunCfg, out_dir: Path, splits, source: Optional[TeacherSource] = None,
        anchors: Optional[torch.Tensor] = None,
        resume: bool = False, dist: Optional[DistInfo] = None, device: Optional[torch.device] = None,
        step_hook: Optional[StepHook] = None) -> NSDResult:
    """Train the student (and alignment heads) of Stage NSD and test the best validation epoch once.

    Args:
        cfg: the run configuration (``student``, ``recipe``, ``nsd``, ``trainer`` sections are read).
        out_dir: the NSD directory (``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``).
        splits: :class:`pand.data.DataSplits` with train (augmenting) and eval transforms attached.
        source: teacher features (required unless ``recipe.use_teacher`` is false).
        anchors: ``[C, D_t]`` L2-normalised class anchors (PSC-learned or hand-crafted).
        resume: continue from the last checkpoint in ``out_dir`` (refused if the configuration differs).
        dist: rank/world of this process (default: one process).
        device: where to train (default: from ``trainer.accelerator``).
        step_hook: called as ``hook(epoch, step)`` after every optimiser step (tests use it to interrupt a run).

    Returns:
        :class:`NSDResult` with the best epoch, val/test top-1, final loss terms, throughput and best weights.

    Raises:
        ConfigError, ArtifactError, NonFiniteLossError, PandError: bad settings, mismatched teacher/anchors,
            a resume under another configuration, a NaN/inf loss, CUDA out of memory.
    """
    dist = dist or DistInfo()
    device = device or select_device(cfg.trainer.accelerator, dist.local_rank)
    out_dir = Path(out_dir)
    _check_inputs(cfg.recipe, cfg.teacher, splits, source, anchors)
    cache_choice = None
    if cfg.recipe.use_teacher:  # nsd.teacher_cache.views > 0: a LiveTeacher becomes cached replayed views
        # views=auto measures the teacher and a throw-away student here, before seeding (RNG states restored)
        views, cache_choice = resolve_views(cfg, source, _train_set(splits), dist, device, anchors, out_dir,
                                            resume, num_classes=len(splits.class_names))
        source = maybe_cache_teacher(cfg, source, _train_set(splits), dist, views=views)
    if device.type != "cuda" and cfg.trainer.precision != "fp32":
        warnings.warn(f"trainer.precision={cfg.trainer.precision} applies to CUDA only; training in fp32 on CPU")
    seed_everything(int(cfg.trainer.seed), bool(cfg.trainer.deterministic))
    model = build_models(cfg.student, cfg.recipe, len(splits.class_names),
                         source.embed_dim if source is not None else None, device, bool(cfg.trainer.channels_last))
    train_model = _wrap_for_training(model, cfg.trainer, dist, device)
    loaders = build_data(cfg.nsd, cfg.trainer, splits, dist, device)
    optimizer, scheduler = build_optim(cfg.nsd, model.parameters())
    scaler = grad_scaler(device, cfg.trainer.precision)
    criterion = NSDCriterion.from_config(cfg.nsd, cfg.recipe)
    ramp = criterion.label_free_warning()
    if ramp and dist.is_main and not resume:
        warnings.warn(ramp)
    life = RunLifecycle("Stage NSD", cfg.trainer.skip_nonfinite_steps, out_dir / "checkpoints",
                        OmegaConf.to_container(cfg, resolve=True), resume,
                        {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}, NONFINITE_FIX,
                        Best(-1, -1.0), best_key="best_top1", run_dir=out_dir, warn=dist.is_main)
    ctx = NSDContext(cfg, out_dir, device, dist, model, train_model, criterion, loaders,
                     optimizer, scheduler, scaler, life, source if cfg.recipe.use_teacher else None,
                     anchors.to(device).float() if (anchors is not None and cfg.recipe.use_teacher) else None)
    start = _restore(ctx)
    barrier(dist)
    ctx.logger = MetricsLogger(out_dir, dist.is_main, bool(cfg.trainer.tensorboard), start, ctx.global_step)
    ctx.teacher_cache = cache_choice
    if dist.is_main:
        record_choice(cache_choice, out_dir, ctx.logger, start)
    try:
        for epoch in range(start, int(cfg.nsd.epochs)):
            try:
                stats = train_one_epoch(ctx, epoch, step_hook)
            except torch.cuda.OutOfMemoryError as e:
                raise _oom_error(ctx) from e
            ctx.scheduler.step()
            _end_of_epoch(ctx, epoch, stats)
        return _final_test(ctx)
    finally:
        ctx.logger.close()
