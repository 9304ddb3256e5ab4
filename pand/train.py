"""Run a recipe end to end: Stage PSC (learned class anchors) then Stage NSD (student distillation).

``pand-train`` (:mod:`pand.cli`) calls :func:`run`. A run directory holds::

    config.yaml            the resolved configuration
    psc/                   Stage PSC artifact (learned_text_features.safetensors) and its logs
    nsd/                   checkpoints/, metrics.jsonl, tensorboard/
    student.safetensors    the best-on-validation student's state_dict(); metadata: arch, num_classes,
                           class_names, image_size, preprocess, val_top1, epoch, recipe, teacher
    summary.json           val_top1, test_top1 (fractions), final loss terms, wall time, images/s, ...
    curves.png             loss terms, val top-1 and learning rate per epoch (from nsd/metrics.jsonl)

Progress and results are logged through :mod:`pand.report` (one line per epoch, a final block). Epochs are printed
1-based and stored 0-based in the files (see :mod:`pand.report`).

``student.safetensors`` + ``config.yaml`` are what ``pand-export`` reads; keep them stable.

Under torchrun (``trainer.devices > 1``) every process calls :func:`run`: the process group is initialised
here, Stage PSC runs on rank 0 only, NSD runs data-parallel, and only rank 0 writes.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

from omegaconf import OmegaConf

from pand.config import STAGES, save_config
from pand.data import build_splits, check_data_source, create_transform, preprocess_spec_from_student
from pand.errors import ArtifactError, ConfigError
from pand import report
from pand.models.teacher import create_teacher, teacher_summary
from pand.nsd.metrics import read_metrics
from pand.nsd import LiveTeacher, fit
from pand.engine.checkpoint import check_resume_config, checkpoint_config, has_checkpoint, refuse_overwrite
from pand.engine.run_folder import check_run_folder
from pand.promptkd import run as promptkd_run
from pand.psc import ARTIFACT_NAME, handcrafted_anchors, load_anchors, run_psc
from pand.utils.distributed import (
    barrier, check_ranks_agree, check_shared_dir, cleanup_distributed, dist_env, init_distributed, run_fingerprint,
    select_device,
)
from pand.utils.io import atomic_write_json, save_tensors
from pand.utils.lock import LOCK_NAME, exclusive_lock

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PSCCfg, RecipeCfg, RunCfg, StudentCfg

__all__ = ["run", "build_run_splits", "resolve_anchors", "student_metadata", "write_student"]


def build_run_splits(cfg: RunCfg) -> Any:
    """``pand.data.build_splits`` with the student's train (augmenting) and eval transforms attached."""
    pp = preprocess_spec_from_student(cfg.student)
    train_tf = create_transform(pp, True, str(cfg.student.augment), tuple(cfg.student.train_crop_scale))
    return build_splits(cfg.data, cache_dir=cfg.cache_dir, train_transform=train_tf,
                        eval_transform=create_transform(pp, False))


def _psc_artifact_path(psc_cfg: PSCCfg, run_dir: Path) -> Path:
    return Path(str(psc_cfg.artifact)).expanduser() if psc_cfg.artifact else run_dir / "psc" / ARTIFACT_NAME


def resolve_anchors(cfg: RunCfg, run_dir: Path, stage: str, splits, teacher, dist, resume: bool = False
                    ) -> Optional[Any]:
    """Class anchors ``[C, D_t]`` for NSD, running Stage PSC (rank 0) when the recipe learns them.

    * ``recipe.anchors=handcrafted``: the template prompts through the teacher's text tower (VL2Lite).
    * ``recipe.anchors=psc``: ``run_psc`` (reuses a matching artifact in ``run_dir/psc``; ``psc.artifact`` names a
      file to use instead) unless ``stage=nsd`` or ``psc.enabled=false``, which require an existing artifact.
      When resuming a run that has an NSD checkpoint, the artifact in ``run_dir/psc`` must still match (it is never
      retrained under a student that was trained with it).

    Returns:
        The anchors, or None when the recipe uses no teacher or only Stage PSC was asked for.
    """
    if not cfg.recipe.use_teacher:
        return None
    if cfg.recipe.anchors == "handcrafted":
        if stage == "psc":
            warnings.warn(f"recipe {cfg.recipe.name} uses hand-crafted anchors: Stage PSC has nothing to do")
            return None
        return handcrafted_anchors(teacher, splits.prompts())
    if stage in ("all", "psc") and cfg.psc.enabled:
        if dist.is_main:
            run_psc(cfg, run_dir, splits=splits, teacher=teacher,
                    reuse_only=resume and has_checkpoint(run_dir / "nsd" / "checkpoints"))
        barrier(dist)
    if stage == "psc":
        return None
    path = _psc_artifact_path(cfg.psc, run_dir)
    if not path.is_file():
        raise ArtifactError(f"no Stage PSC anchors at {path}. Run Stage PSC first (--stage psc or --stage all), or "
                            f"set psc.artifact=/path/to/learned_text_features.safetensors")
    anchors, _ = load_anchors(path, len(splits.class_names), teacher.embed_dim, teacher.identity,
                              class_names=splits.class_names)
    return anchors


def student_metadata(student_cfg: StudentCfg, recipe_cfg: RecipeCfg, class_names, val_top1: Optional[float],
                     epoch: int, teacher=None) -> Dict[str, Any]:
    """Metadata of ``student.safetensors`` (everything needed to rebuild and feed the student)."""
    pp = preprocess_spec_from_student(student_cfg)
    return {
        "format": "pand-student-v1", "arch": str(student_cfg.arch), "num_classes": len(class_names),
        "class_names": list(class_names), "image_size": pp.image_size, "preprocess": pp.to_dict(),
        "val_top1": val_top1, "epoch": int(epoch), "recipe": str(recipe_cfg.name),
        "teacher": getattr(teacher, "identity", None),
    }


def write_student(path: Path, state: Dict[str, Any], meta: Dict[str, Any]) -> Path:
    """Write the student's ``state_dict()`` as safetensors with JSON metadata (atomic)."""
    save_tensors(path, state, meta)
    return Path(path)


def _check_run_dir(cfg: RunCfg, run_dir: Path, stage: str, resume: bool) -> None:
    """Refuse to overwrite a run (no --resume, any stage: ``--stage psc`` would replace the anchors and config the
    student was trained with) or to resume it under another configuration.

    The resume check compares with the configuration stored in the last NSD checkpoint (what the weights were
    trained with), else with the run's ``config.yaml``; the message names which one it read.
    """
    ckpts = run_dir / "nsd" / "checkpoints"
    refuse_overwrite(ckpts, resume, run_dir)
    if not resume:
        return
    current = OmegaConf.to_container(cfg, resolve=True)
    stored = checkpoint_config(ckpts)
    saved = run_dir / "config.yaml"
    if stored is not None:
        check_resume_config(stored[0], current, stored[1])
    elif saved.is_file():
        check_resume_config(OmegaConf.to_container(OmegaConf.load(saved), resolve=True), current, saved,
                            label="config.yaml")


def _summary(cfg: RunCfg, result, teacher, t0: float, anchors_path: Optional[Path]) -> Dict[str, Any]:
    return {
        "recipe": str(cfg.recipe.name), "student": str(cfg.student.arch), "data": str(cfg.data.name),
        "teacher": teacher_summary(teacher) if teacher is not None else None,
        "val_top1": result.val_top1, "test_top1": result.test_top1,
        "test_top5": result.test["top5"] if result.test else None,
        "test_images": result.test["n"] if result.test else 0,
        "best_epoch": result.best_epoch, "epochs": result.epochs, "final_losses": result.final_terms,
        "wall_time_s": time.time() - t0, "train_time_s": result.train_time_s, "images_per_s": result.images_per_s,
        "anchors": str(anchors_path) if anchors_path else ("handcrafted" if teacher is not None else None),
        # nsd.teacher_cache.views as used; for views=auto the choice, the measured per-batch costs and the reason
        "teacher_cache": result.teacher_cache,
    }


def _run_nsd(cfg: RunCfg, run_dir: Path, stage: str, resume: bool, dist, device, step_hook, t0: float
             ) -> Optional[dict]:
    if dist.distributed and not dist.is_main:
        barrier(dist)  # rank 0 builds first: it may generate/cache data that the others then read
    splits = build_run_splits(cfg)
    if dist.distributed and dist.is_main:
        barrier(dist)
    teacher = create_teacher(cfg.teacher, device) if cfg.recipe.use_teacher else None
    anchors = resolve_anchors(cfg, run_dir, stage, splits, teacher, dist, resume)
    if stage == "psc":
        return None
    source = None
    if teacher is not None:
        source = LiveTeacher(teacher, cfg.student.mean, cfg.student.std,
                             channels_last=device.type == "cuda" and bool(cfg.trainer.channels_last))
    result = fit(cfg, run_dir / "nsd", splits, source, anchors, resume=resume, dist=dist, device=device,
                 step_hook=step_hook)
    summary = None
    if dist.is_main:
        meta = student_metadata(cfg.student, cfg.recipe, splits.class_names, result.val_top1, result.best_epoch,
                                teacher)
        write_student(run_dir / "student.safetensors", result.student_state, meta)
        anchors_path = _psc_artifact_path(cfg.psc, run_dir) if cfg.recipe.use_teacher and cfg.recipe.anchors == "psc" \
            else None
        summary = _summary(cfg, result, teacher, t0, anchors_path)
        # data.skip_corrupt=true: unreadable images dropped per split (test_images counts only the readable ones)
        summary["skipped_images"] = {split: len(paths) for split, paths in splits.skipped.items()}
        # the transfer set: labelled images (CE + teacher terms) and unlabelled ones (teacher terms only)
        summary["train_images"] = {"labeled": len(splits.train),
                                   "unlabeled": len(splits.unlabeled) if splits.unlabeled is not None else 0}
        atomic_write_json(run_dir / "summary.json", summary)
        _report_end(cfg, run_dir, summary)
    barrier(dist)
    return summary


def _report_end(cfg: RunCfg, run_dir: Path, summary: Dict[str, Any]) -> None:
    """``curves.png`` from ``nsd/metrics.jsonl`` and the final block (:mod:`pand.report`)."""
    metrics = run_dir / "nsd" / "metrics.jsonl"
    curves = report.write_curves(read_metrics(metrics), run_dir / report.CURVES_NAME,
                                 title=f"{cfg.name}: {cfg.recipe.name} on {cfg.data.name}")
    outputs = {"student": run_dir / "student.safetensors", "summary": run_dir / "summary.json",
               "config": run_dir / "config.yaml", "metrics": metrics}
    if curves is not None:
        outputs["curves"] = curves
    if (run_dir / "nsd" / "tensorboard").is_dir():
        outputs["tensorboard"] = run_dir / "nsd" / "tensorboard"
    report.log_final(summary, run_dir, outputs)


def run(cfg: RunCfg, run_dir: Path, stage: str = "all", resume: bool = False, step_hook=None
        ) -> Optional[Dict[str, Any]]:
    """:func:`_run` under an exclusive lock on ``run_dir`` (``run_dir/.pand.lock``, :mod:`pand.utils.lock`).

    ``resume`` on a finished run (:func:`pand.report.finished_run`) under the same configuration logs that it is
    finished and returns its ``summary.json`` without writing anything (not even the lock); under another
    configuration it is refused as any resume is, naming the differing keys.

    The dataset's cheap checks (:func:`pand.data.check_data_source`: ``data.root``, its layout) run first: a dataset
    that cannot be read is a :class:`pand.errors.DataError` and nothing is created.

    A second process training into the same directory is refused at once with a :class:`pand.utils.lock.LockedError`
    naming the holder's pid; a read-only ``run_dir`` is a :class:`PandError` before anything is written. Under
    torchrun only global rank 0 takes the lock. The arguments, return value and errors are :func:`_run`'s.
    """
    run_dir = Path(run_dir)
    done = report.finished_run(run_dir) if resume and stage != "psc" else None
    if done is not None:  # checked before the lock is taken: a finished run is left exactly as it is
        _check_run_dir(cfg, run_dir, stage, resume)  # (read-only) another configuration is still refused, naming it
        report.log.info(f"{run_dir} is a finished run (summary.json and student.safetensors are there): nothing to "
                        f"resume, no file was changed. To train longer or differently, start a new run (another "
                        f"--run-dir, or leave --run-dir out for the next free runs/<name>-N).")
        return done
    # a dataset that cannot be read (data.root missing, wrong layout) is refused before the run folder, its lock or
    # config.yaml exist: a failed start leaves nothing behind (and takes no runs/<name>-N)
    check_data_source(cfg.data, cfg.cache_dir)
    if os.environ.get("RANK", "0") != "0":
        return _run(cfg, run_dir, stage, resume, step_hook)
    # before the lock file is created: a folder that is not a run (or of another recipe) gets nothing, not even
    # the lock; _run checks again under the lock
    check_run_folder(run_dir, str(cfg.recipe.name), "promptkd" if cfg.recipe.name == "promptkd" else stage, resume)
    with exclusive_lock(run_dir / LOCK_NAME, f"run directory {run_dir}",
                        "wait for that run to finish or choose another --run-dir"):
        return _run(cfg, run_dir, stage, resume, step_hook)


def _run(cfg: RunCfg, run_dir: Path, stage: str = "all", resume: bool = False, step_hook=None
         ) -> Optional[Dict[str, Any]]:
    """Run ``cfg``'s recipe into ``run_dir``.

    Args:
        cfg: the resolved run configuration (:func:`pand.config.load_config`).
        run_dir: output directory (created).
        stage: ``all`` (PSC when the recipe learns anchors, then NSD), ``psc`` or ``nsd`` (reuses the PSC artifact).
        resume: continue from the last NSD checkpoint (refused when the configuration changed).
        step_hook: ``hook(epoch, step)`` after every NSD optimiser step (tests use it to interrupt a run).

    Returns:
        The summary dict (``summary.json``) on rank 0 after NSD; None otherwise.

    Raises:
        ConfigError, DataError, ArtifactError, PandError: with a message naming the bad input and the fix.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage '{stage}'. Valid stages: {', '.join(STAGES)}")
    run_dir = Path(run_dir)
    t0 = time.time()
    if cfg.recipe.name == "promptkd":
        # config.yaml is written by the recipe once every refusal check has passed (a refused rerun writes nothing)
        return promptkd_run(cfg, run_dir, resume=resume, write_config=True)
    env = dist_env()
    device = select_device(str(cfg.trainer.accelerator), env[2] if env else 0)
    dist = init_distributed(device.type, cfg.trainer.backend)
    try:
        if dist.distributed:  # every node must run the same configuration and code (multi-node: docs/distributed.md)
            check_ranks_agree(run_fingerprint(cfg, stage, resume), dist)
        folder = check_run_folder(run_dir, str(cfg.recipe.name), stage, resume)  # run.json: kind, state
        _check_run_dir(cfg, run_dir, stage, resume)
        barrier(dist)  # every rank has read the folder before rank 0 writes to it
        # a resumed run keeps its config.yaml until it ends well: a later refusal must leave the folder unchanged
        keep_config = resume and (run_dir / "config.yaml").is_file()
        if dist.is_main:
            folder.start()
            if not keep_config:
                save_config(cfg, run_dir / "config.yaml")
        check_shared_dir(run_dir, dist, "run directory")  # rank 0 writes, every rank reads (multi-node: shared FS)
        summary = _run_nsd(cfg, run_dir, stage, resume, dist, device, step_hook, t0)
        if dist.is_main:
            if keep_config:
                save_config(cfg, run_dir / "config.yaml")
            folder.finish(["psc", "nsd"] if stage == "all" else [stage])
        return summary
    finally:
        cleanup_distributed(dist)
