"""pand: distil a CLIP teacher into a lightweight fine-grained classifier (PAND, PromptKD).

PAND has two stages: PSC (prompt-aware semantic calibration) learns class anchors from the teacher's text tower,
and NSD (neighborhood-aware structural distillation) trains the student against the teacher's features and those
anchors.

Library layout (dependencies point one way; nothing here imports the CLI):

* :mod:`pand.config`   - structured run configuration (OmegaConf) and group composition
* :mod:`pand.data`     - official dataset layouts, dataset registry, held-out validation, transforms, synthetic
  benchmark
* :mod:`pand.demo`     - ``python -m pand.demo``: the whole toolchain on the synthetic benchmark
* :mod:`pand.engine`   - the training scaffold the stages share (device, optimiser and LR schedule, step, loaders,
  loop, checkpoints)
* :mod:`pand.losses`   - pure loss functions of Stage NSD (CE, L1 alignment, text-logit KD, NLRD) and their weighting
* :mod:`pand.models`   - open_clip teacher, student registry, alignment heads
* :mod:`pand.nsd`      - Stage NSD (criterion, model, teacher seam and teacher-feature cache, checkpoints)
* :mod:`pand.promptkd` - the PromptKD recipe (PromptSRC teacher, stored class vectors, prompted student, its loss)
* :mod:`pand.psc`      - Stage PSC (feature cache, CoOp prompt learner, anchors)
* :mod:`pand.utils`    - safetensors I/O, file locks, seeding, distributed helpers
* :mod:`pand.train` / :mod:`pand.cli` - ``pand-train``; :mod:`pand.report` - what it prints (epoch lines, final block,
  curves.png); :mod:`pand.errors` - user-facing error types
* :mod:`pand.inference` - ``pand.load_student(run)``: the trained PyTorch student from Python (``predict`` like
  ``pand_runtime.Predictor``)

The method is described in ``docs/method.md``, the layout in ``docs/architecture.md``.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "load_student"]


def __getattr__(name):
    """``pand.load_student`` (:func:`pand.inference.load_student`), imported on first use so ``import pand`` stays
    light."""
    if name in ("load_student", "StudentClassifier"):
        from pand import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'pand' has no attribute {name!r}")
