"""The PromptKD recipe: label-free distillation of a CLIP teacher into a prompted, smaller CLIP image encoder.

``run`` = :func:`build_data` -> teacher -> :func:`prepare_class_vectors` (text side run ONCE) -> student ->
:func:`fit` (per epoch: train on the unlabeled pool, validate on held-out base-class val images, checkpoint) ->
:func:`evaluate_base_novel` for the teacher (its image features, prompted for PromptSRC, against the stored class
vectors) and the student -> cross-dataset evaluation -> export ``run_dir/student.safetensors`` -> GFLOPs -> summaries.

What happens each step (``docs/method.md``, "PromptKD"; the reference's defects are not reproduced):

* the student's augmented batch (RandomResizedCrop + flip) is also the teacher's input, re-normalised / resized
  to the teacher's preprocessing (:class:`pand.nsd.teacher_source.LiveTeacher`). The teacher image logits are
  therefore computed **live every step** (an augmented view is new every epoch, so there is nothing to cache);
  the teacher's text side is **never** run again: ``l_t = s_t * n(f_t) @ T^T`` uses the stored ``T``;
* ``l_s = s_s * n(projector(encoder(x))) @ T^T``; loss ``kd_weight * KL(l_s/tau || l_t/tau) * tau^2 / (B*C)``
  (:func:`pand.promptkd.loss.promptkd_kd_loss`); labels are never read (the pool returns label ``-1``);
* the unlabeled pool is ``promptkd.pool`` (:mod:`pand.promptkd.protocol`): ``reference`` (default, training images
  of all classes, no test image: what the reference code distils on), ``inductive`` (base-class training images
  only) or ``transductive`` (adds the test images; flagged in capitals in the summaries);
* the classes in the training logits are the base classes (inductive) or all classes (reference, transductive);
* ``kd_weight`` is ``promptkd.kd_weight``, or when that is null the reference's value for the dataset
  (:func:`pand.promptkd.protocol.resolve_kd_weight`: 1000; 200 for FGVC-Aircraft, Flowers-102, DTD);
* with ``promptkd.teacher_prompts=promptsrc`` (default) the teacher is first prompt-tuned with PromptSRC on the base
  classes (:mod:`pand.promptkd.promptsrc`); its prompted image tower gives the teacher image features and its
  text prompts the class vectors. ``coop`` uses a Stage PSC text context over the frozen image tower;
* fp32 master weights; bf16/fp16 autocast on CUDA only (``trainer.precision``), a grad scaler for fp16;
* LR per epoch from :func:`pand.promptkd.protocol.promptkd_lr` (1 constant warm-up epoch at 1e-5, then cosine).

Nothing is written into the run directory before every refusal check has passed (:func:`preflight`: overwrite,
resume configuration, pool, stored class vectors); ``config.yaml`` is written after them when asked.

Model selection never looks at test images: ``promptkd.select=last`` (default, fully label-free) or ``best_val``
(student accuracy on the held-out val split's base-class images). Runs are seeded and resumable per epoch
(``--resume``; refused when the configuration changed). Runs on one device (``trainer.devices=1``).

Not verified here: CUDA/AMP paths and real pretrained weights (ViT-L/14 teacher, ViT-B/16 student); the CPU
tests use tiny random-init open_clip models on the synthetic benchmark.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from pand.errors import ArtifactError, DataError, PandError

from .class_vectors import (
    CLASS_VECTORS_NAME, class_vectors_for, compute_class_vectors, load_class_vectors, save_class_vectors,
)
from .loss import promptkd_kd_loss, promptkd_logits
from .class_vectors import teacher_prompts_source
from .protocol import (
    build_pool, check_pool, harmonic_mean, pool_class_ids, promptkd_lr, resolve_base_novel, resolve_kd_weight,
    resolve_pool, subset_accuracy, subset_by_classes,
)
from .student import (
    PromptKDClassifier, PromptKDStudent, build_promptkd_student, classifier_metadata, trainable_parameters,
)

__all__ = ["run", "preflight", "PromptKDContext", "build_data", "prepare_class_vectors", "fit", "extract_features",
           "evaluate_base_novel", "TRANSDUCTIVE_NOTE", "POOL_NOTES"]

TRANSDUCTIVE_NOTE = (
    "TRANSDUCTIVE: THE UNLABELED DISTILLATION POOL INCLUDED THE TEST IMAGES (AND NOVEL-CLASS TRAINING IMAGES). "
    "RESULTS ARE NOT COMPARABLE WITH THE REFERENCE OR INDUCTIVE POOLS."
)
REFERENCE_NOTE = ("reference: the unlabeled pool held the training images of all classes, base and novel (labels "
                  "unused, no test image), as the reference code")
INDUCTIVE_NOTE = "inductive: the unlabeled pool held only training images of the base classes (no test image)"
POOL_NOTES = {"reference": REFERENCE_NOTE, "inductive": INDUCTIVE_NOTE, "transductive": TRANSDUCTIVE_NOTE}
# keys that may change between a run and its resumption (evaluation-only settings)
_RESUME_FREE = ("promptkd.cross_eval", "promptkd.eval_batch_size")


@dataclass
class PromptKDContext:
    """Everything one PromptKD run works with."""

    cfg: Any
    out_dir: Path
    device: torch.device
    splits: Any
    base: List[int]
    novel: List[int]
    teacher: Any
    class_vectors: torch.Tensor  # [C, D_t] on device
    cv_meta: Dict[str, Any]
    student: PromptKDStudent
    pp: Any  # pand.data.transforms.PreprocessCfg of the student
    train_ids: List[int]
    pool: Any = None
    pool_mode: str = "reference"
    kd_weight: float = 1000.0
    kd_weight_source: str = ""
    history: List[Dict[str, Any]] = field(default_factory=list)
    progress: bool = True


# --------------------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------------------
def _check_single_process(cfg) -> None:
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if int(cfg.trainer.devices) > 1 or world > 1:
        raise PandError(
            f"the PromptKD recipe runs on one device (batch {cfg.promptkd.batch_size}, as the reference); got "
            f"trainer.devices={cfg.trainer.devices}. Set trainer.devices=1 (e.g. trainer=default)."
        )


def build_data(cfg) -> tuple:
    """``(splits, base, novel)``; raises :class:`DataError` for an empty base or novel side."""
    from pand.data import build_splits

    splits = build_splits(cfg.data, cache_dir=cfg.cache_dir)
    base, novel = resolve_base_novel(splits)
    return splits, base, novel


def _vectors_match(meta: Dict[str, Any], cfg, splits, teacher) -> bool:
    from pand.models.teacher import same_teacher

    return (teacher_prompts_source(meta.get("source")) == teacher_prompts_source(cfg.promptkd.teacher_prompts)
            and list(meta.get("class_names", [])) == list(splits.class_names)
            and meta.get("template") == str(splits.template)
            and same_teacher(str(meta.get("teacher_identity")), teacher.identity))


def prepare_class_vectors(cfg, run_dir: Path, splits, teacher, base: Sequence[int], resume: bool,
                          progress: bool = True) -> tuple:
    """Compute the class vectors once for this run and save them; a resumed run reads the stored ones back.

    Raises:
        ArtifactError: on ``resume``, stored vectors made by another teacher or for other classes, template or
            ``teacher_prompts`` (the checkpoint was trained against them).

    Returns:
        ``(vectors [C, D_t] fp32 on the CPU, metadata)``.
    """
    stored = _stored_class_vectors(cfg, run_dir, splits, teacher, resume)
    if stored is not None:
        return stored
    path = Path(run_dir) / "promptkd" / CLASS_VECTORS_NAME
    vectors, meta = compute_class_vectors(cfg, Path(run_dir), splits, teacher, base, progress=progress)
    save_class_vectors(path, vectors, meta)
    return load_class_vectors(path, class_names=splits.class_names, embed_dim=teacher.embed_dim,
                              teacher_id=teacher.identity)


def _stored_class_vectors(cfg, run_dir: Path, splits, teacher, resume: bool) -> Optional[tuple]:
    """On ``resume``, the stored class vectors (checked to fit this run, nothing written); else None."""
    path = Path(run_dir) / "promptkd" / CLASS_VECTORS_NAME
    if not (resume and path.is_file()):
        return None
    vectors, meta = load_class_vectors(path, embed_dim=teacher.embed_dim)
    if not _vectors_match(meta, cfg, splits, teacher):
        raise ArtifactError(
            f"{path} was made by another teacher, class list, template or teacher_prompts setting than this "
            f"resumed run; resume with the original settings or start a new --run-dir"
        )
    return vectors, meta


def preflight(cfg, run_dir: Path, resume: bool) -> str:
    """Every refusal that needs no data or model, before anything is written: one device, no overwrite of a
    trained run, on ``resume`` the checkpoint's configuration equals this one, a known pool and teacher_prompts.

    Returns:
        The pool name (:func:`pand.promptkd.protocol.resolve_pool`).

    Raises:
        PandError, ArtifactError, DataError: naming the problem; nothing was written.
    """
    from pand.nsd.checkpoint import check_resume_config, checkpoint_config

    _check_single_process(cfg)
    out_dir = Path(run_dir) / "promptkd"
    _check_fresh(out_dir, resume)
    if resume:
        saved = checkpoint_config(out_dir / "checkpoints")
        if saved is not None:
            check_resume_config(saved[0], _config_dict(cfg), saved[1])
    teacher_prompts_source(cfg.promptkd.teacher_prompts)
    return resolve_pool(cfg.promptkd)


def _check_fresh(out_dir: Path, resume: bool) -> None:
    """Refuse to start over a run that already has checkpoints (before anything is written)."""
    from pand.nsd.checkpoint import has_checkpoint

    if not resume and has_checkpoint(out_dir / "checkpoints"):
        raise ArtifactError(f"{out_dir} already holds PromptKD checkpoints; pass --resume to continue that run or "
                            f"choose another --run-dir (nothing was overwritten)")


@torch.no_grad()
def extract_features(encode, dataset, batch_size: int, device: torch.device, trainer_cfg, precision: str = "fp32",
                     desc: str = "features", progress: bool = True) -> tuple:
    """``(features [N, D] fp32 CPU, labels [N] long CPU)`` of ``encode(images)`` over a labelled eval dataset."""
    from tqdm.auto import tqdm

    from pand.nsd.data import make_eval_loader
    from pand.nsd.engine import autocast
    from pand.utils.distributed import DistInfo

    if dataset is None or len(dataset) == 0:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    loader = make_eval_loader(dataset, batch_size, DistInfo(), trainer_cfg, device.type)
    feats, labels = [], []
    for images, y, _ in tqdm(loader, desc=desc, disable=not progress, leave=False):
        with autocast(device, precision):
            f = encode(images.to(device, non_blocking=True))
        feats.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu())
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


def _trainable_state(student: PromptKDStudent) -> Dict[str, torch.Tensor]:
    """Tensors that change in training: trainable parameters and the projector's BatchNorm buffers."""
    state = {n: p.detach().clone() for n, p in trainable_parameters(student)}
    state.update({n: b.detach().clone() for n, b in student.named_buffers() if n.startswith("projector.")})
    return state


def _load_trainable(student: PromptKDStudent, state: Dict[str, torch.Tensor]) -> None:
    """Load a :func:`_trainable_state` dict; every key must be one of the student's trainable tensors."""
    expected = set(_trainable_state(student))
    if set(state) != expected:
        raise ArtifactError(f"checkpoint tensors {sorted(set(state) ^ expected)[:5]} do not fit the student's "
                            f"trainable state; it was written with other prompt/projector settings")
    student.load_state_dict(state, strict=False)


def _make_optimizer(cfg, student: PromptKDStudent) -> torch.optim.Optimizer:
    pk = cfg.promptkd
    params = [p for _, p in trainable_parameters(student)]
    if pk.optimizer == "sgd":
        return torch.optim.SGD(params, lr=float(pk.lr), momentum=float(pk.momentum),
                               weight_decay=float(pk.weight_decay))
    if pk.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=float(pk.lr), weight_decay=float(pk.weight_decay))
    raise PandError(f"unknown promptkd.optimizer '{pk.optimizer}'. Valid choices: sgd, adamw")


def _config_dict(cfg) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(cfg, resolve=True)
    for key in _RESUME_FREE:
        section, name = key.split(".")
        d.get(section, {}).pop(name, None)
    return d


def _sha(t: torch.Tensor) -> str:
    from pand.utils.io import sha256_bytes

    return sha256_bytes(t.detach().float().cpu().contiguous().numpy().tobytes())[:16]


# --------------------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------------------
def _train_epoch(ctx: PromptKDContext, loader, source, optimizer, scaler, epoch: int) -> Dict[str, float]:
    from tqdm.auto import tqdm

    from pand.nsd.engine import autocast

    cfg, pk, dev = ctx.cfg, ctx.cfg.promptkd, ctx.device
    lr = promptkd_lr(epoch, float(pk.lr), int(pk.epochs), int(pk.warmup_epochs), float(pk.warmup_lr))
    for g in optimizer.param_groups:
        g["lr"] = lr
    loader.sampler.set_epoch(epoch, epoch)
    source.set_epoch(epoch)
    T = ctx.class_vectors[ctx.train_ids]
    ctx.student.train()
    total, steps, images_seen, t0 = 0.0, 0, 0, time.time()
    bar = tqdm(loader, desc=f"promptkd epoch {epoch + 1}/{pk.epochs}", disable=not ctx.progress, leave=False)
    for images, _unused_labels, indices in bar:  # pool labels are -1 placeholders
        images = images.to(dev, non_blocking=True)
        l_t = promptkd_logits(source.features(images, indices), T, ctx.teacher.logit_scale)
        with autocast(dev, cfg.trainer.precision):
            f_s = ctx.student.projector(ctx.student.encoder(images))
        l_s = promptkd_logits(f_s.float(), T, ctx.student.logit_scale)
        loss = ctx.kd_weight * promptkd_kd_loss(l_s, l_t, float(pk.temperature))
        if not torch.isfinite(loss):
            raise PandError(
                f"non-finite PromptKD loss ({loss.item()}) at epoch {epoch} step {steps}; the step was not applied. "
                f"Lower promptkd.lr or promptkd.kd_weight, or use trainer.precision=fp32; resume with --resume."
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach())
        steps += 1
        images_seen += images.shape[0]
        bar.set_postfix(loss=f"{total / steps:.4f}")
    dt = time.time() - t0
    return {"loss": total / max(steps, 1), "lr": lr, "steps": steps, "images_per_s": images_seen / max(dt, 1e-9)}


def _validate(ctx: PromptKDContext) -> Optional[float]:
    """Student base-class accuracy on the held-out val split (never test); None without val images of base."""
    val = ctx.splits.val
    if val is None:
        return None
    val_base = subset_by_classes(val, ctx.base)
    if len(val_base) == 0:
        return None
    from pand.data.transforms import create_transform

    feats, labels = extract_features(
        ctx.student.encode_image, val_base.with_transform(create_transform(ctx.pp, False)),
        int(ctx.cfg.promptkd.eval_batch_size), ctx.device, ctx.cfg.trainer, ctx.cfg.trainer.precision, "val",
        ctx.progress)
    ctx.student.train()
    return subset_accuracy(feats, labels, ctx.class_vectors.cpu(), ctx.base)[0]


def _restore(ctx: PromptKDContext, root: Path, config: Dict[str, Any], resume: bool, optimizer, scaler,
             fingerprint: Dict[str, str]) -> tuple:
    """Load the last checkpoint when resuming: ``(first epoch to run, best record)``."""
    from pand.nsd.checkpoint import check_resume_config, load_last_checkpoint, restore_rng, split_prefixed

    if not resume:
        _check_fresh(root.parent, resume)
        return 0, {"epoch": None, "val": None}
    ck = load_last_checkpoint(root)
    if ck is None:
        warnings.warn(f"--resume: no PromptKD checkpoint in {root}; starting from the first epoch")
        return 0, {"epoch": None, "val": None}
    tensors, meta, state, where = ck
    check_resume_config(meta.get("config", {}), config, where)
    if dict(state.get("fingerprint", {})) != fingerprint:
        raise ArtifactError(
            f"cannot resume from {where}: the frozen student weights or the class vectors differ from the ones it "
            f"was trained with ({state.get('fingerprint')} vs {fingerprint}); start a new --run-dir"
        )
    _load_trainable(ctx.student, split_prefixed(tensors, "trainable"))
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"])
    ctx.history = list(state["history"])
    return int(state["epoch"]) + 1, {"epoch": state["best_epoch"], "val": state["best_val"]}


def fit(ctx: PromptKDContext, resume: bool = False) -> Dict[str, Any]:
    """Train prompts + projector on the unlabeled pool; checkpoint every epoch; return the selection record.

    Returns:
        ``{"epoch", "val", "select"}`` of the kept weights (loaded into ``ctx.student``).
    """
    from pand.data.transforms import create_transform
    from pand.models.teacher import state_dict_sha256
    from pand.nsd.checkpoint import best_weights_path, capture_rng, save_checkpoint, split_prefixed
    from pand.nsd.data import make_train_loader
    from pand.nsd.teacher_source import LiveTeacher
    from pand.utils.distributed import DistInfo
    from pand.utils.io import load_tensors

    cfg, pk = ctx.cfg, ctx.cfg.promptkd
    transform = create_transform(ctx.pp, True, "standard", crop_scale=tuple(pk.train_crop_scale))
    ctx.pool, _ = build_pool(ctx.splits, ctx.pool_mode, ctx.base, transform=transform)
    if len(ctx.pool) < 2:
        raise DataError(f"the {ctx.pool_mode} distillation pool has {len(ctx.pool)} image(s); PromptKD needs at "
                        f"least 2")
    loader = make_train_loader(ctx.pool, int(pk.batch_size), int(cfg.trainer.seed), DistInfo(), cfg.trainer,
                               ctx.device.type)
    source = LiveTeacher(ctx.teacher, ctx.pp.mean, ctx.pp.std)
    optimizer = _make_optimizer(cfg, ctx.student)
    scaler = torch.amp.GradScaler("cuda", enabled=ctx.device.type == "cuda" and cfg.trainer.precision == "fp16")
    root = ctx.out_dir / "checkpoints"
    config = _config_dict(cfg)
    fingerprint = {"student": state_dict_sha256(ctx.student.encoder.visual)[:16],
                   "class_vectors": _sha(ctx.class_vectors)}
    start, best = _restore(ctx, root, config, resume, optimizer, scaler, fingerprint)
    select = str(pk.select)
    for epoch in range(start, int(pk.epochs)):
        stats = _train_epoch(ctx, loader, source, optimizer, scaler, epoch)
        val = _validate(ctx)
        ctx.history.append({"epoch": epoch, **stats, "val_base_acc": val})
        if val is not None and (best["val"] is None or val > best["val"]):
            best = {"epoch": epoch, "val": val}
        tensors = {f"trainable.{k}": v for k, v in _trainable_state(ctx.student).items()}
        state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "rng": capture_rng(), "history": ctx.history, "best_epoch": best["epoch"], "best_val": best["val"],
                 "fingerprint": fingerprint}
        save_checkpoint(root, epoch, tensors, state, config, best_epoch=epoch if best["epoch"] is None
                        else best["epoch"], keep=1)
    if select == "best_val":
        if best["epoch"] is None:
            warnings.warn("promptkd.select=best_val but there are no validation images of the base classes; "
                          "keeping the last epoch")
        else:
            _load_trainable(ctx.student, split_prefixed(load_tensors(best_weights_path(root))[0], "trainable"))
            return {"epoch": best["epoch"], "val": best["val"], "select": select}
    last_val = ctx.history[-1]["val_base_acc"] if ctx.history else None
    return {"epoch": int(pk.epochs) - 1, "val": last_val, "select": "last"}


# --------------------------------------------------------------------------------------------------------------
# evaluation, export, summary
# --------------------------------------------------------------------------------------------------------------
def _teacher_eval(ctx: PromptKDContext) -> Dict[str, Any]:
    """Teacher zero-shot base/novel/HM on the test split with the stored class vectors (its own eval transform)."""
    feats, labels = extract_features(ctx.teacher.encode_image, ctx.splits.test.with_transform(ctx.teacher.preprocess),
                                     int(ctx.cfg.teacher.batch_size), ctx.device, ctx.cfg.trainer, "fp32",
                                     "teacher test", ctx.progress)
    return evaluate_base_novel(feats, labels, ctx.class_vectors.cpu(), ctx.base, ctx.novel)


def _student_eval(ctx: PromptKDContext, dataset, class_vectors: torch.Tensor, base, novel, desc: str):
    from pand.data.transforms import create_transform

    ctx.student.eval()
    feats, labels = extract_features(
        ctx.student.encode_image, dataset.with_transform(create_transform(ctx.pp, False)),
        int(ctx.cfg.promptkd.eval_batch_size), ctx.device, ctx.cfg.trainer, ctx.cfg.trainer.precision, desc,
        ctx.progress)
    return evaluate_base_novel(feats, labels, class_vectors.cpu(), base, novel)


def _cross_eval(ctx: PromptKDContext) -> Dict[str, Any]:
    """The distilled student (and the teacher) on other datasets' test splits with their own class vectors."""
    from pand.data import build_splits

    out: Dict[str, Any] = {}
    for name in ctx.cfg.promptkd.cross_eval:
        data_cfg = _data_config(str(name))
        splits = build_splits(data_cfg, cache_dir=ctx.cfg.cache_dir)
        vectors, how = class_vectors_for(ctx.teacher, splits.class_names, str(splits.template), ctx.cv_meta)
        ids = list(range(len(splits.class_names)))
        s = _student_eval(ctx, splits.test, vectors, ids, [], f"cross {name}")
        feats, labels = extract_features(ctx.teacher.encode_image, splits.test.with_transform(ctx.teacher.preprocess),
                                         int(ctx.cfg.teacher.batch_size), ctx.device, ctx.cfg.trainer, "fp32",
                                         f"teacher cross {name}", ctx.progress)
        t = subset_accuracy(feats, labels, vectors, ids)[0]
        out[str(name)] = {"dataset": str(data_cfg.name), "num_classes": len(ids), "n_images": s["n_images"],
                          "student": s["all"], "teacher": t, "class_vectors": how}
    return out


def _data_config(name: str):
    """A ``data`` section from ``configs/data/<name>.yaml`` or a YAML file path, on the schema defaults."""
    from omegaconf import OmegaConf

    from pand.config import ConfigError
    from pand.config.loader import config_dir, list_group
    from pand.config.schema import DataCfg

    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = config_dir() / "data" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"promptkd.cross_eval: unknown data config '{name}'. Valid choices: "
                          f"{', '.join(list_group('data'))}, or a path to a data YAML file")
    node = OmegaConf.merge(OmegaConf.structured(DataCfg), OmegaConf.load(path))
    return node


def _export(ctx: PromptKDContext, run_dir: Path, extra: Dict[str, Any]) -> Path:
    """``run_dir/student.safetensors``: the deployable classifier (all classes) with rebuild metadata."""
    from pand.utils.io import save_tensors

    clf = PromptKDClassifier(ctx.student, ctx.class_vectors.cpu()).eval()
    meta = classifier_metadata(ctx.cfg, clf, ctx.pp, list(ctx.splits.class_names), extra)
    path = run_dir / "student.safetensors"
    save_tensors(path, clf.state_dict(), meta)
    return path


def _summary(ctx: PromptKDContext, teacher: Dict, student: Dict, selection: Dict, cross: Dict, gflops: Dict,
             artifacts: Dict[str, str], seconds: float) -> Dict[str, Any]:
    pool = ctx.pool_mode
    parts = ctx.pool.parts if ctx.pool is not None else []
    test_paths = {p for p, _ in ctx.splits.test.samples} if ctx.splits.test is not None else set()
    pool_samples = [(p, y) for part in parts for p, y in part.samples]
    novel = set(ctx.novel)
    return {
        "recipe": "promptkd",
        "pool_mode": pool,
        "regime": pool,  # old name of pool_mode
        "protocol": POOL_NOTES[pool],
        "dataset": str(ctx.cfg.data.name),
        "classes": {"total": len(ctx.splits.class_names), "base": len(ctx.base), "novel": len(ctx.novel),
                    "in_training_logits": len(ctx.train_ids)},
        "pool": {"mode": pool, "transductive": pool == "transductive", "images": len(pool_samples),
                 "test_images": sum(p in test_paths for p, _ in pool_samples),
                 "novel_class_images": sum(y in novel for _, y in pool_samples), "labels_used": False},
        "kd_weight": {"value": ctx.kd_weight, "source": ctx.kd_weight_source},
        "teacher_prompts": str(ctx.cv_meta.get("source")),
        "results": {"teacher": teacher, "student": student},
        "side_by_side": {k: {"teacher": teacher[k], "student": student[k]} for k in ("base", "novel", "hm", "all")},
        "selection": {**selection, "uses_test": False},
        "class_vectors": {k: ctx.cv_meta.get(k) for k in (
            "source", "teacher_identity", "psc_artifact", "psc_trained_on", "psc_context", "promptsrc_artifact",
            "promptsrc_trained_on", "promptsrc_prompts_sha", "promptsrc_settings", "promptsrc_final_losses")
            if k in ctx.cv_meta},
        "cross_eval": cross,
        "gflops": gflops,
        "teacher_step": ("live teacher image forward (with its PromptSRC vision prompts)" if
                         ctx.cv_meta.get("source") == "promptsrc" else "live frozen teacher image forward")
        + " on the student's augmented view every step; text side never",
        "history": ctx.history,
        "artifacts": artifacts,
        "seconds": seconds,
    }


def run(cfg, run_dir: Path, resume: bool = False, progress: bool = True, write_config: bool = False
        ) -> Dict[str, Any]:
    """Run the PromptKD recipe end to end.

    Args:
        cfg: the resolved run configuration (``recipe.name=promptkd``).
        run_dir: outputs: ``promptkd/`` (class vectors, PromptSRC prompts, checkpoints, summary),
            ``student.safetensors``, ``summary.json``.
        resume: continue from the last epoch checkpoint (refused when the configuration differs).
        progress: tqdm bars.
        write_config: write ``run_dir/config.yaml`` once every refusal check has passed (``pand-train`` does).

    Returns:
        The summary dict (also written to ``run_dir/promptkd/summary.json`` and ``run_dir/summary.json``).

    Raises:
        DataError: empty base/novel side, empty pool, transductive mode without a test split, unknown pool.
        ArtifactError: a trained run without ``--resume``, a checkpoint or stored class vectors of another
            configuration (all refused before anything is written).
        PandError: several devices, unknown architectures, weights that cannot be loaded.
    """
    from pand.models.teacher import create_teacher
    from pand.utils.distributed import select_device
    from pand.utils.io import atomic_write_json
    from pand.utils.seed import seed_everything

    t0 = time.time()
    run_dir = Path(run_dir)
    out_dir = run_dir / "promptkd"
    pool = preflight(cfg, run_dir, resume)
    seed_everything(int(cfg.trainer.seed), bool(cfg.trainer.deterministic))
    device = select_device(str(cfg.trainer.accelerator))
    splits, base, novel = build_data(cfg)
    check_pool(splits, pool)  # before any model work
    kd_weight, kd_source = resolve_kd_weight(cfg.promptkd, str(cfg.data.name))
    teacher = create_teacher(cfg.teacher, device=device)
    _stored_class_vectors(cfg, run_dir, splits, teacher, resume)  # refuses stale vectors before any write
    if write_config:
        from pand.config import save_config

        save_config(cfg, run_dir / "config.yaml")
    vectors, cv_meta = prepare_class_vectors(cfg, run_dir, splits, teacher, base, resume, progress)
    if cv_meta.get("source") == "promptsrc":
        from .promptsrc import load_promptsrc_artifact, prompted_teacher

        teacher = prompted_teacher(teacher, *load_promptsrc_artifact(cv_meta["promptsrc_artifact"], teacher))
    torch.manual_seed(int(cfg.trainer.seed))  # the student's prompt init does not depend on what ran before
    student, pp = build_promptkd_student(cfg, int(teacher.embed_dim))
    if vectors.shape[1] != student.embed_dim:
        raise ArtifactError(f"class vectors have dimension {vectors.shape[1]} but the projector outputs "
                            f"{student.embed_dim}; they come from another teacher")
    ctx = PromptKDContext(cfg, out_dir, device, splits, list(base), list(novel), teacher, vectors.to(device), cv_meta,
                          student.to(device), pp, pool_class_ids(pool, base, novel), progress=progress,
                          pool_mode=pool, kd_weight=kd_weight, kd_weight_source=kd_source)
    selection = fit(ctx, resume=resume)
    teacher_res = _teacher_eval(ctx)
    student_res = _student_eval(ctx, splits.test, ctx.class_vectors, ctx.base, ctx.novel, "student test")
    cross = _cross_eval(ctx)
    from .flops import promptkd_gflops

    try:
        gflops = promptkd_gflops(str(cfg.teacher.arch), cfg.teacher.get("image_size"),
                                 PromptKDClassifier(ctx.student, ctx.class_vectors.cpu()), pp.image_size)
    except Exception as e:  # noqa: BLE001 - a cost report must not fail a finished run
        warnings.warn(f"GFLOPs not counted: {type(e).__name__}: {e}")
        gflops = {"error": f"{type(e).__name__}: {e}"}
    export_extra = {"pool": pool, "regime": pool, "teacher_identity": teacher.identity,
                    "selected_epoch": selection["epoch"], "class_vectors_source": cv_meta.get("source"),
                    "kd_weight": kd_weight}
    student_path = _export(ctx, run_dir, export_extra)
    artifacts = {"student": str(student_path), "class_vectors": str(out_dir / CLASS_VECTORS_NAME),
                 "checkpoints": str(out_dir / "checkpoints")}
    if cv_meta.get("promptsrc_artifact"):
        artifacts["promptsrc_teacher"] = str(cv_meta["promptsrc_artifact"])
    summary = _summary(ctx, teacher_res, student_res, selection, cross, gflops, artifacts, time.time() - t0)
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_json(run_dir / "summary.json", summary)
    return summary
