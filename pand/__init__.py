"""pand: distil a CLIP teacher into a lightweight fine-grained classifier (PAND, PromptKD).

Library layout (dependencies point one way; nothing here imports the CLI):

* :mod:`pand.config`  - structured run configuration (OmegaConf) and group composition
* :mod:`pand.data`    - official dataset layouts, held-out validation, transforms, synthetic benchmark
* :mod:`pand.models`  - open_clip teacher, student registry, alignment heads
* :mod:`pand.losses`  - pure loss functions of Stage NSD (CE, L1 alignment, text-logit KD, NLRD) and their weighting
* :mod:`pand.psc`     - Stage PSC, prompt-aware semantic calibration (feature cache, CoOp prompt learner, anchors)
* :mod:`pand.nsd`     - Stage NSD, neighborhood-aware structural distillation (engine, criterion, teacher seam and
  teacher-feature cache, checkpoints)
* :mod:`pand.promptkd` - the PromptKD recipe (PromptSRC teacher, stored class vectors, prompted student, its loss)
* :mod:`pand.demo`    - ``python -m pand.demo``: the whole toolchain on the synthetic benchmark
* :mod:`pand.utils`   - atomic I/O, hashing, file locks, seeding, distributed helpers
* :mod:`pand.train` / :mod:`pand.cli` - ``pand-train``; :mod:`pand.errors` - user-facing error types

The method is described in ``docs/method.md``, the layout in ``docs/architecture.md``.
"""
__version__ = "0.1.0"
