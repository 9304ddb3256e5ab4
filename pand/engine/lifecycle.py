"""The run lifecycle every training loop of pand uses: fresh-or-resume, per-epoch checkpoints with RNG, the
non-finite-loss policy, best-on-validation selection.

A loop builds its own model, loss and data, then one :class:`RunLifecycle` and asks it, in this order::

    life = RunLifecycle("Stage NSD", skip_nonfinite, root=<run>/nsd/checkpoints, config=cfg_dict, resume=resume,
                        parts={"optimizer": opt, "scheduler": sched, "scaler": scaler}, fix="Lower nsd.lr ...")
    ck = life.open()                      # fresh: refuse an existing checkpoint; resume: read and check the last one
    if ck is not None: load its own tensors / bookkeeping from ck.tensors / ck.state, then life.restore(ck)
                       (the parts, the RNG states, the best record, life.start)
    for epoch in range(life.start, epochs):
        ... per step: if not life.finite(values, optimizer, epoch, i, detail): return None   (skipped)
                      optimizer_step(loss, optimizer, scaler, ...)
        ... validate: life.best.offer(epoch, val)  (or life.best.take(epoch) without validation)
        life.save(epoch, its tensors, **its bookkeeping)
    tensors, meta = life.best_tensors()   # the best validation epoch's weights, the run's result

* **Fresh or resume** (:meth:`RunLifecycle.open`): a fresh run refuses to start over an existing checkpoint
  (:func:`~pand.engine.checkpoint.refuse_overwrite`); a resumed one refuses a checkpoint written under another
  configuration (:func:`~pand.engine.checkpoint.check_resume_config`), then restores the state of every part
  (anything with ``state_dict``/``load_state_dict``: optimiser, scheduler, grad scaler), the RNG states of torch,
  python and numpy, and the best-so-far record, and hands the loop its tensors and bookkeeping. ``resume=AUTO``
  (a stage whose checkpoint is keyed on its inputs) continues a checkpoint of the same configuration and starts
  over otherwise.
* **Checkpoint** (:meth:`RunLifecycle.save`): the scaffold's atomic per-epoch directory
  (:func:`~pand.engine.checkpoint.save_checkpoint`), the best epoch's never pruned. A loop without a checkpoint
  directory (``root=None``) uses only the policy and the selection.
* **Non-finite policy** (:meth:`RunLifecycle.finite`): one finiteness check of a step's loss values, before anything
  of the step is applied. ``trainer.skip_nonfinite_steps=false`` raises :class:`NonFiniteLossError` naming the
  stage, the epoch and step, the offending values, the last good checkpoint and the fix; ``true`` drops the step's
  gradients, warns, and the loop returns None from its step so :func:`pand.engine.loop.train_one_epoch` counts it
  as skipped. :func:`all_skipped` is the error of an epoch in which every step was skipped.
* **Selection** (:class:`Best`): the epoch with the highest validation metric (first one on ties).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from pand.errors import ArtifactError, PandError
from pand.utils.io import load_tensors, read_json

from .checkpoint import (
    best_weights_path, capture_rng, check_resume_config, config_diff, has_checkpoint, load_last_checkpoint,
    refuse_overwrite, restore_rng, save_checkpoint,
)
from .step import nonfinite_step

__all__ = ["AUTO", "NonFiniteLossError", "Best", "Resumed", "RunLifecycle", "all_skipped"]

#: ``resume=AUTO``: continue a checkpoint written under the same configuration, else start over (a stage whose
#: checkpoint is keyed on its inputs, like Stage PSC inside a run)
AUTO = "auto"

#: what every non-finite error and warning says about the switch
SKIP_HINT = "trainer.skip_nonfinite_steps=true skips such steps instead (counted per epoch as skipped_steps)"


class NonFiniteLossError(PandError):
    """A loss became NaN/inf; the step was not applied (raised by every loop unless
    ``trainer.skip_nonfinite_steps=true``)."""


@dataclass
class Best:
    """The best-on-validation record: ``epoch`` (or step) and ``value`` of the highest metric so far.

    Attributes:
        epoch: the best epoch (None before any).
        value: its metric (None before any, or when the run has no validation).
        since: evaluations offered since the best one (early stopping's patience counter).
    """

    epoch: Optional[int] = None
    value: Optional[float] = None
    since: int = 0

    def offer(self, epoch: int, value: Optional[float]) -> bool:
        """Keep ``epoch`` when ``value`` beats the best (strictly; the first one always does). ``value`` None (no
        evaluation this epoch) changes nothing.

        Returns:
            Whether ``epoch`` is now the best.
        """
        if value is None:
            return False
        if self.epoch is None or self.value is None or value > self.value:
            self.take(epoch, value)
            return True
        self.since += 1
        return False

    def take(self, epoch: int, value: Optional[float] = None) -> None:
        """Make ``epoch`` the best unconditionally (a run without validation keeps its last epoch)."""
        self.epoch, self.value, self.since = epoch, value, 0


@dataclass
class Resumed:
    """What :meth:`RunLifecycle.open` found: the checkpoint's tensors, its stored state (the loop's own
    bookkeeping under its own keys), and the epoch directory."""

    tensors: Dict[str, torch.Tensor]
    state: Dict[str, Any]
    where: Path


class RunLifecycle:
    """One run of one training loop: fresh-or-resume, checkpoints, the non-finite policy and the selection.

    Args:
        stage: the loop's name in messages (``Stage NSD``, ``PromptKD student``, ...).
        skip_nonfinite: ``trainer.skip_nonfinite_steps``.
        root: the checkpoints directory (None: the loop keeps no checkpoint; :meth:`open` and :meth:`save` do
            nothing).
        config: the resolved configuration stored with every checkpoint and compared on resume (a plain dict).
        resume: ``--resume`` (True/False), or :data:`AUTO`: continue the last checkpoint when it was written under the
            same ``config``, else start over (an unreadable one is warned about) and never refuse.
        parts: name -> object with ``state_dict()``/``load_state_dict()`` (optimiser, scheduler, grad scaler),
            saved and restored under that name.
        fix: what the user can do about a non-finite loss (the loop's settings), in the error.
        best: the initial selection record (e.g. ``Best(-1, -1.0)``).
        best_key: the state key of the best value (``best_<metric>``); the best epoch is ``best_epoch``.
        run_dir: named in the refusal to overwrite (default: ``root``'s parent).
        warn: False silences the skip warning (non-main ranks).
        keep: latest epoch directories kept besides the best one.
    """

    def __init__(self, stage: str, skip_nonfinite: bool, root: Optional[Path] = None,
                 config: Optional[Mapping[str, Any]] = None, resume: bool | str = False,
                 parts: Optional[Mapping[str, Any]] = None, fix: str = "", best: Optional[Best] = None,
                 best_key: str = "best_val", run_dir: Optional[Path] = None, warn: bool = True, keep: int = 1):
        self.stage, self.skip, self.fix, self.warn = stage, bool(skip_nonfinite), fix, warn
        self.root = Path(root) if root is not None else None
        self.config = dict(config or {})
        self.resume, self.parts, self.keep = resume, dict(parts or {}), keep
        self.best = best if best is not None else Best()
        self.best_key = best_key
        self.run_dir = Path(run_dir) if run_dir is not None else (self.root.parent if self.root else None)
        self.start = 0  #: the first epoch to run (set by :meth:`open`)

    # ---------------------------------------------------------------------------------------------------- resume
    def open(self) -> Optional[Resumed]:
        """Start fresh or resume.

        Fresh (no ``resume``): refuse a directory that already holds a checkpoint. Resume: load the last checkpoint,
        refuse it under another configuration, restore every part, the RNG states and :attr:`best`, and set
        :attr:`start` to the epoch after it. A resume without a checkpoint starts from the first epoch (warned).

        Returns:
            :class:`Resumed` (the loop loads its own tensors and bookkeeping from it), or None (fresh start).

        Raises:
            ArtifactError: a checkpoint without ``resume``, another configuration, an unreadable checkpoint.
        """
        self.start = 0
        if self.root is None:
            return None
        if self.resume == AUTO:
            return self._open_auto()
        refuse_overwrite(self.root, self.resume, self.run_dir)
        if not self.resume:
            return None
        ck = load_last_checkpoint(self.root)
        if ck is None:
            warnings.warn(f"--resume: no {self.stage} checkpoint in {self.root}; starting from the first epoch")
            return None
        tensors, meta, state, where = ck
        check_resume_config(meta.get("config", {}), self.config, where)
        return Resumed(tensors, state, where)

    def _open_auto(self) -> Optional[Resumed]:
        try:
            ck = load_last_checkpoint(self.root)
        except ArtifactError as e:
            warnings.warn(f"ignoring the unreadable {self.stage} checkpoint ({e}); starting over")
            return None
        if ck is None or config_diff(ck[1].get("config", {}), self.config, ()):
            return None  # none, or of other inputs: start over (the next save replaces it)
        return Resumed(ck[0], ck[2], ck[3])

    def restore(self, ck: Resumed) -> None:
        """Load the parts, the RNG states and the best record of ``ck`` and set :attr:`start` (call after the loop's
        own checks of ``ck``, and after it loaded its tensors)."""
        for name, part in self.parts.items():
            part.load_state_dict(ck.state[name])
        restore_rng(ck.state["rng"])
        self.best = Best(ck.state["best_epoch"], ck.state[self.best_key], int(ck.state.get("best_since", 0)))
        self.start = int(ck.state["epoch"]) + 1

    # ------------------------------------------------------------------------------------------------ checkpoint
    def save(self, epoch: int, tensors: Mapping[str, torch.Tensor], **extra: Any) -> Optional[Path]:
        """Checkpoint the finished ``epoch``: ``tensors`` (the loop's weights), every part's state, the RNG states,
        the best record and ``extra`` (the loop's bookkeeping, restored from :attr:`Resumed.state`)."""
        if self.root is None:
            return None
        state = {"epoch": epoch, **{k: p.state_dict() for k, p in self.parts.items()}, "rng": capture_rng(),
                 **extra, "best_epoch": self.best.epoch, self.best_key: self.best.value}
        if self.best.since:
            state["best_since"] = self.best.since
        best_epoch = epoch if self.best.epoch is None else self.best.epoch
        return save_checkpoint(self.root, epoch, tensors, state, self.config, best_epoch, keep=self.keep)

    def best_tensors(self) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        """``(tensors, metadata)`` of the best epoch's checkpoint (the run's result)."""
        return load_tensors(best_weights_path(self.root))

    def last_good(self) -> str:
        """The checkpoint a stopped run resumes from, in words."""
        if self.root is None:
            return "none (this loop keeps no checkpoint; it starts over)"
        if not has_checkpoint(self.root):
            return "none yet (the run stopped in its first epoch)"
        return f"{self.root} (epoch {int(read_json(self.root / 'last.json')['epoch'])}; resume with --resume)"

    # ------------------------------------------------------------------------------------------ non-finite policy
    def finite(self, values: torch.Tensor, optimizer: torch.optim.Optimizer, epoch: int, step: int,
               detail: Callable[[], str] = lambda: "") -> bool:
        """The non-finite policy of one step, before anything of it is applied.

        Args:
            values: the step's loss (or loss terms), any shape; all finite = the step may be applied.
            optimizer: whose gradients a skipped step drops.
            epoch: the epoch (or, for a loop counted in steps, the evaluation period) named in the message.
            step: the step within it.
            detail: called only for a non-finite step: what the values were and where they came from.

        Returns:
            True when every value is finite; False when the step is skipped (``trainer.skip_nonfinite_steps``).

        Raises:
            NonFiniteLossError: a non-finite value and skipping is off.
        """
        if bool(torch.isfinite(values.detach()).all()):
            return True
        what = detail() or f"loss = {values.detach().float().flatten().tolist()[:8]}"
        nonfinite_step(NonFiniteLossError(
            f"non-finite loss at epoch {epoch} step {step} of {self.stage} ({what}). The step was not applied and "
            f"nothing was overwritten. Last good checkpoint: {self.last_good()}. {self.fix}; {SKIP_HINT}."
        ), self.skip, optimizer, warn=self.warn)
        return False


def all_skipped(stage: str, epoch: int, skipped: int, fix: str) -> NonFiniteLossError:
    """The error of an epoch whose every step had a non-finite loss (and was skipped): nothing can be learned."""
    return NonFiniteLossError(f"every step of epoch {epoch} of {stage} had a non-finite loss ({skipped} skipped "
                              f"with trainer.skip_nonfinite_steps=true); nothing can be learned. {fix}.")

