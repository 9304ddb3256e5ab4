"""PromptKD's checkpoints, in the scaffold's format (:mod:`pand.engine.checkpoint`) under
``run_dir/promptkd/checkpoints/``.

An epoch checkpoint holds the student's trainable tensors as ``trainable.<name>`` (prompts, projector, its
BatchNorm buffers; :func:`trainable_state`) and, in its state, the optimiser and grad-scaler states, the RNG states,
the history, the best validation record and a fingerprint of what the run was trained against (the frozen
student weights and the class vectors). A resumed run must have the same configuration (except the
evaluation-only keys :data:`RESUME_FREE`) and the same fingerprint.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from omegaconf import OmegaConf

from pand.engine.checkpoint import (
    best_weights_path, capture_rng, check_resume_config, checkpoint_config, load_last_checkpoint, refuse_overwrite,
    restore_rng, save_checkpoint, split_prefixed,
)
from pand.errors import ArtifactError
from pand.models.teacher import state_dict_sha256
from pand.utils.digest import tensor_sha256
from pand.utils.io import load_tensors

from .context import PromptKDContext
from .student import PromptKDStudent, trainable_parameters

__all__ = ["RESUME_FREE", "NO_BEST", "config_dict", "check_resumable", "trainable_state", "load_trainable",
           "fingerprint", "restore", "save_epoch", "load_best"]

#: keys that may change between a run and its resumption (evaluation-only settings)
RESUME_FREE = ("promptkd.cross_eval", "promptkd.eval_batch_size")
#: a fresh run's best-validation record
NO_BEST: Dict[str, Any] = {"epoch": None, "val": None}


def config_dict(cfg: Any) -> Dict[str, Any]:
    """The resolved configuration as stored in a checkpoint: a plain dict without the :data:`RESUME_FREE` keys."""
    d = OmegaConf.to_container(cfg, resolve=True)
    for key in RESUME_FREE:
        section, name = key.split(".")
        d.get(section, {}).pop(name, None)
    return d


def check_resumable(cfg: Any, out_dir: Path, resume: bool) -> None:
    """Refuse to start over existing checkpoints without ``resume`` (the scaffold's
    :func:`~pand.engine.checkpoint.refuse_overwrite`), and on ``resume`` the stored checkpoint's configuration must
    equal this one.

    Raises:
        ArtifactError: a trained run without ``resume``, or a checkpoint of another configuration.
    """
    refuse_overwrite(out_dir / "checkpoints", resume, out_dir)
    if resume:
        saved = checkpoint_config(out_dir / "checkpoints")
        if saved is not None:
            check_resume_config(saved[0], config_dict(cfg), saved[1])


def trainable_state(student: PromptKDStudent) -> Dict[str, torch.Tensor]:
    """Tensors that change in training: trainable parameters and the projector's BatchNorm buffers (copies)."""
    state = {n: p.detach().clone() for n, p in trainable_parameters(student)}
    state.update({n: b.detach().clone() for n, b in student.named_buffers() if n.startswith("projector.")})
    return state


def load_trainable(student: PromptKDStudent, state: Dict[str, torch.Tensor]) -> None:
    """Load a :func:`trainable_state` dict.

    Raises:
        ArtifactError: the keys are not exactly the student's trainable tensors (other prompt/projector settings).
    """
    expected = set(trainable_state(student))
    if set(state) != expected:
        raise ArtifactError(f"checkpoint tensors {sorted(set(state) ^ expected)[:5]} do not fit the student's "
                            f"trainable state; it was written with other prompt/projector settings")
    student.load_state_dict(state, strict=False)


def fingerprint(ctx: PromptKDContext) -> Dict[str, str]:
    """What the run is trained against: the frozen student weights and the class vectors (16 hex digits each)."""
    return {"student": state_dict_sha256(ctx.student.encoder.visual)[:16],
            "class_vectors": tensor_sha256(ctx.class_vectors.detach().float())[:16]}


def restore(ctx: PromptKDContext, root: Path, config: Dict[str, Any], resume: bool, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, expected: Dict[str, str]) -> Tuple[int, Dict[str, Any]]:
    """Load the last checkpoint of ``root`` into the student, optimiser, scaler, RNG and ``ctx.history`` when
    resuming.

    Returns:
        ``(first epoch to run, best record {epoch, val})``; ``(0, no best)`` for a fresh run, or a resumed run
        without a checkpoint (warned).

    Raises:
        ArtifactError: a checkpoint of another configuration or fingerprint (``expected``).
    """
    if not resume:
        refuse_overwrite(root, resume, root.parent)
        return 0, dict(NO_BEST)
    ck = load_last_checkpoint(root)
    if ck is None:
        warnings.warn(f"--resume: no PromptKD checkpoint in {root}; starting from the first epoch")
        return 0, dict(NO_BEST)
    tensors, meta, state, where = ck
    check_resume_config(meta.get("config", {}), config, where)
    if dict(state.get("fingerprint", {})) != expected:
        raise ArtifactError(
            f"cannot resume from {where}: the frozen student weights or the class vectors differ from the ones it "
            f"was trained with ({state.get('fingerprint')} vs {expected}); start a new --run-dir"
        )
    load_trainable(ctx.student, split_prefixed(tensors, "trainable"))
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"])
    ctx.history = list(state["history"])
    return int(state["epoch"]) + 1, {"epoch": state["best_epoch"], "val": state["best_val"]}


def save_epoch(ctx: PromptKDContext, root: Path, epoch: int, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, best: Dict[str, Any], config: Dict[str, Any],
               expected: Dict[str, str]) -> None:
    """The checkpoint of a finished ``epoch`` (the last one and the best one are kept)."""
    tensors = {f"trainable.{k}": v for k, v in trainable_state(ctx.student).items()}
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
             "rng": capture_rng(), "history": ctx.history, "best_epoch": best["epoch"], "best_val": best["val"],
             "fingerprint": expected}
    save_checkpoint(root, epoch, tensors, state, config, best_epoch=epoch if best["epoch"] is None
                    else best["epoch"], keep=1)


def load_best(student: PromptKDStudent, root: Path) -> None:
    """Load the trainable tensors of the best validation epoch recorded in ``root``."""
    load_trainable(student, split_prefixed(load_tensors(best_weights_path(root))[0], "trainable"))
