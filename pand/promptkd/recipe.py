"""The PromptKD recipe: label-free distillation of a CLIP teacher into a prompted, smaller CLIP image encoder.

:func:`run` is the orchestration; each step lives in the module named for it:

1. :func:`preflight`: every refusal that needs no data or model (one device, no overwrite of a trained run, the
   resume configuration, a known pool and ``teacher_prompts``); nothing is written before it and the data, pool
   and stored-class-vector checks have passed; ``config.yaml`` is written after them when asked;
2. data (:mod:`pand.promptkd.data`): splits and the base-to-novel classes; the teacher
   (:func:`pand.models.teacher.create_teacher`);
3. class vectors (:mod:`pand.promptkd.class_vectors`): the teacher's text side run ONCE (PromptSRC prompts trained
   on the base classes by default, :mod:`pand.promptkd.promptsrc`), stored, then only read; with PromptSRC the
   teacher's image tower carries its trained vision prompts;
4. the student (:mod:`pand.promptkd.student`): prompted image encoder + projector;
5. training (:mod:`pand.promptkd.train`, on :mod:`pand.engine`): per epoch, distil on the unlabeled pool
   (``promptkd.pool``, :mod:`pand.promptkd.protocol`), validate on the held-out base-class val images, checkpoint
   (:mod:`pand.promptkd.checkpoint`); model selection never looks at test images (``promptkd.select=last``,
   the default, or ``best_val``);
6. evaluation (:mod:`pand.promptkd.evaluate`): teacher and student base / novel / HM on the test split with the
   stored class vectors, then the cross-dataset evaluations;
7. export ``run_dir/student.safetensors`` (:func:`pand.promptkd.student.save_promptkd_classifier`), GFLOPs and
   ``summary.json`` (:mod:`pand.promptkd.summary`).

``docs/method.md`` ("PromptKD") gives the loss, the pools, the KD weight and the LR; the reference's defects are
not reproduced. Runs are seeded and resumable per epoch (``--resume``; refused when the configuration changed) and
run on one device (``trainer.devices=1``).

Not verified here: CUDA/AMP paths and real pretrained weights (ViT-L/14 teacher, ViT-B/16 student); the CPU
tests use tiny random-init open_clip models on the synthetic benchmark.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

import torch

from pand.config import save_config
from pand.engine.run_folder import check_run_folder
from pand.errors import ArtifactError, PandError
from pand.models.teacher import create_teacher
from pand.utils.distributed import select_device
from pand.utils.io import atomic_write_json
from pand.utils.seed import seed_everything

from .checkpoint import check_resumable
from .class_vectors import CLASS_VECTORS_NAME, prepare_class_vectors, stored_class_vectors, teacher_prompts_source
from .context import PromptKDContext
from .data import build_data
from .evaluate import cross_eval, student_eval, teacher_eval
from .promptsrc import load_promptsrc_artifact, prompted_teacher
from .protocol import check_pool, pool_class_ids, resolve_kd_weight, resolve_pool
from .student import build_promptkd_student, save_promptkd_classifier
from .summary import build_summary, cost_report
from .train import fit

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PromptKDCfg, RunCfg, TrainerCfg

__all__ = ["run", "preflight"]


def _check_single_process(trainer_cfg: TrainerCfg, pk_cfg: PromptKDCfg) -> None:
    """Refuse several devices or processes: the recipe runs on one device, as the reference."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if int(trainer_cfg.devices) > 1 or world > 1:
        raise PandError(
            f"the PromptKD recipe runs on one device (batch {pk_cfg.batch_size}, as the reference); got "
            f"trainer.devices={trainer_cfg.devices}. Set trainer.devices=1 (e.g. trainer=default)."
        )


def preflight(cfg: RunCfg, run_dir: Path, resume: bool) -> str:
    """Every refusal that needs no data or model, before anything is written: one device, no overwrite of a
    trained run, on ``resume`` the checkpoint's configuration equals this one, a known pool and teacher_prompts.

    Returns:
        The pool name (:func:`pand.promptkd.protocol.resolve_pool`).

    Raises:
        PandError, ArtifactError, DataError: naming the problem; nothing was written.
    """
    _check_single_process(cfg.trainer, cfg.promptkd)
    check_resumable(cfg, Path(run_dir) / "promptkd", resume)
    teacher_prompts_source(cfg.promptkd.teacher_prompts)
    return resolve_pool(cfg.promptkd)


def run(cfg: RunCfg, run_dir: Path, resume: bool = False, progress: bool = True, write_config: bool = False
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
    t0 = time.time()
    run_dir = Path(run_dir)
    out_dir = run_dir / "promptkd"
    folder = check_run_folder(run_dir, "promptkd", "promptkd", resume)  # run.json: kind, state; before any write
    pool = preflight(cfg, run_dir, resume)
    seed_everything(int(cfg.trainer.seed), bool(cfg.trainer.deterministic))
    device = select_device(str(cfg.trainer.accelerator))
    splits, base, novel = build_data(cfg.data, cfg.cache_dir)
    check_pool(splits, pool)  # before any model work
    kd_weight, kd_source = resolve_kd_weight(cfg.promptkd, str(cfg.data.name))
    teacher = create_teacher(cfg.teacher, device=device)
    stored_class_vectors(cfg.promptkd, run_dir, splits, teacher, resume)  # refuses stale vectors before any write
    folder.start()
    keep_config = resume and (run_dir / "config.yaml").is_file()  # rewritten once the resumed run ends well
    if write_config and not keep_config:
        save_config(cfg, run_dir / "config.yaml")
    vectors, cv_meta = prepare_class_vectors(cfg, run_dir, splits, teacher, base, resume, progress)
    if cv_meta.get("source") == "promptsrc":
        teacher = prompted_teacher(teacher, *load_promptsrc_artifact(cv_meta["promptsrc_artifact"], teacher))
    torch.manual_seed(int(cfg.trainer.seed))  # the student's prompt init does not depend on what ran before
    student, pp = build_promptkd_student(cfg.promptkd, int(teacher.embed_dim))
    if vectors.shape[1] != student.embed_dim:
        raise ArtifactError(f"class vectors have dimension {vectors.shape[1]} but the projector outputs "
                            f"{student.embed_dim}; they come from another teacher")
    ctx = PromptKDContext(cfg, out_dir, device, splits, list(base), list(novel), teacher, vectors.to(device), cv_meta,
                          student.to(device), pp, pool_class_ids(pool, base, novel), progress=progress,
                          pool_mode=pool, kd_weight=kd_weight, kd_weight_source=kd_source)
    selection = fit(ctx, resume=resume)
    teacher_res = teacher_eval(ctx)
    student_res = student_eval(ctx, splits.test, ctx.class_vectors, ctx.base, ctx.novel, "student test")
    cross = cross_eval(ctx)
    gflops = cost_report(ctx)
    export_extra = {"pool": pool, "regime": pool, "teacher_identity": teacher.identity,
                    "selected_epoch": selection["epoch"], "class_vectors_source": cv_meta.get("source"),
                    "kd_weight": kd_weight}
    student_path = save_promptkd_classifier(run_dir / "student.safetensors", cfg.promptkd, cfg.teacher, ctx.student,
                                            ctx.class_vectors, pp, list(splits.class_names), export_extra)
    artifacts = {"student": str(student_path), "class_vectors": str(out_dir / CLASS_VECTORS_NAME),
                 "checkpoints": str(out_dir / "checkpoints")}
    if cv_meta.get("promptsrc_artifact"):
        artifacts["promptsrc_teacher"] = str(cv_meta["promptsrc_artifact"])
    summary = build_summary(ctx, teacher_res, student_res, selection, cross, gflops, artifacts, time.time() - t0)
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_json(run_dir / "summary.json", summary)
    if write_config and keep_config:
        save_config(cfg, run_dir / "config.yaml")
    folder.finish(["promptkd"])
    return summary
