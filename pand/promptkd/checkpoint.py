"""PromptKD's checkpoints, in the scaffold's format (:mod:`pand.engine.checkpoint`) under
``run_dir/promptkd/checkpoints/``, written and resumed by the run lifecycle (:mod:`pand.engine.lifecycle`).

An epoch checkpoint holds the student's trainable tensors as ``trainable.<name>`` (prompts, projector, its
BatchNorm buffers; :func:`trainable_state`) and, in its state, the optimiser and grad-scaler states, the RNG states,
the history, the best validation record and a fingerprint of what the run was trained against (the frozen
student weights and the class vectors). A resumed run must have the same configuration (except the
evaluation-only keys :data:`RESUME_FREE`) and the same fingerprint.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

import torch
from omegaconf import OmegaConf

from pand.engine.checkpoint import check_resume_config, checkpoint_config, refuse_overwrite, split_prefixed
from pand.engine.lifecycle import RunLifecycle
from pand.errors import ArtifactError
from pand.models.teacher import state_dict_sha256
from pand.utils.digest import tensor_sha256

from .context import PromptKDContext
from .student import PromptKDStudent, trainable_parameters

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import RunCfg

__all__ = ["RESUME_FREE", "NONFINITE_FIX", "config_dict", "check_resumable", "trainable_state", "load_trainable",
           "fingerprint", "lifecycle", "restore", "save_epoch", "load_best"]

#: keys that may change between a run and its resumption (evaluation-only settings)
RESUME_FREE = ("promptkd.cross_eval", "promptkd.eval_batch_size")
#: what a user can do about a non-finite PromptKD loss
NONFINITE_FIX = "Lower promptkd.lr or promptkd.kd_weight, or use trainer.precision=fp32"


def config_dict(cfg: RunCfg) -> Dict[str, Any]:
    """The resolved configuration as stored in a checkpoint: a plain dict without the :data:`RESUME_FREE` keys."""
    d = OmegaConf.to_container(cfg, resolve=True)
    for key in RESUME_FREE:
        section, name = key.split(".")
        d.get(section, {}).pop(name, None)
    return d


def check_resumable(cfg: RunCfg, out_dir: Path, resume: bool) -> None:
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


def lifecycle(ctx: PromptKDContext, root: Path, resume: bool, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler) -> RunLifecycle:
    """The run's :class:`~pand.engine.lifecycle.RunLifecycle`: checkpoints under ``root``, the optimiser and the
    grad scaler as its parts, the best base-class validation accuracy as ``best_val``."""
    return RunLifecycle("the PromptKD student", bool(ctx.cfg.trainer.skip_nonfinite_steps), root, config_dict(ctx.cfg),
                        resume, {"optimizer": optimizer, "scaler": scaler}, NONFINITE_FIX, best_key="best_val")


def restore(ctx: PromptKDContext, life: RunLifecycle, expected: Dict[str, str]) -> int:
    """Fresh or resumed: on resume the student's trainable tensors, the optimiser, scaler, RNG, best record and
    ``ctx.history`` of the last checkpoint.

    Returns:
        The first epoch to run (0 for a fresh run, or a resumed run without a checkpoint, which is warned).

    Raises:
        ArtifactError: a checkpoint of another configuration or fingerprint (``expected``).
    """
    ck = life.open()
    if ck is None:
        return 0
    if dict(ck.state.get("fingerprint", {})) != expected:
        raise ArtifactError(
            f"cannot resume from {ck.where}: the frozen student weights or the class vectors differ from the ones it "
            f"was trained with ({ck.state.get('fingerprint')} vs {expected}); start a new --run-dir"
        )
    load_trainable(ctx.student, split_prefixed(ck.tensors, "trainable"))
    life.restore(ck)
    ctx.history = list(ck.state["history"])
    return life.start


def save_epoch(ctx: PromptKDContext, life: RunLifecycle, epoch: int, expected: Dict[str, str]) -> None:
    """The checkpoint of a finished ``epoch`` (the last one and the best one are kept)."""
    tensors = {f"trainable.{k}": v for k, v in trainable_state(ctx.student).items()}
    life.save(epoch, tensors, history=ctx.history, fingerprint=expected)


def load_best(student: PromptKDStudent, life: RunLifecycle) -> None:
    """Load the trainable tensors of the best validation epoch recorded by ``life``."""
    load_trainable(student, split_prefixed(life.best_tensors()[0], "trainable"))
