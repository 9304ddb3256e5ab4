"""The training scaffold every stage of pand runs on (in the shape of torchvision's reference scripts).

Modules, by responsibility:

* :mod:`pand.engine.device`: autocast context, gradient scaler, memory format (``trainer.precision``,
  ``trainer.channels_last``).
* :mod:`pand.engine.optim`: the one optimiser factory (:func:`~pand.engine.optim.build_optimizer`: SGD | AdamW), the
  per-epoch torch scheduler (:func:`~pand.engine.optim.build_scheduler`: cosine | step | none, linear warm-up) and
  the closed-form warm-up + cosine LR (:func:`~pand.engine.optim.cosine_lr`, written with
  :func:`~pand.engine.optim.set_lr`).
* :mod:`pand.engine.step`: one optimisation step (:func:`~pand.engine.step.optimizer_step`: zero_grad, backward
  through the scaler, clipping, step) and the non-finite-loss policy (:func:`~pand.engine.step.nonfinite_step`).
* :mod:`pand.engine.loop`: :func:`~pand.engine.loop.train_one_epoch` (walks the batches, sums what the stage's
  step returns, counts applied/skipped steps and images) and :func:`~pand.engine.loop.evaluate` (top-1/top-5/CE).
* :mod:`pand.engine.lifecycle`: the run lifecycle every loop uses (:class:`~pand.engine.lifecycle.RunLifecycle`):
  fresh-or-resume, a checkpoint per epoch with RNG, the non-finite policy
  (:class:`~pand.engine.lifecycle.NonFiniteLossError` unless ``trainer.skip_nonfinite_steps``) and
  best-on-validation selection (:class:`~pand.engine.lifecycle.Best`).
* :mod:`pand.engine.checkpoint`: the checkpoint format and resume, RNG capture/restore, the resume-time
  configuration check, optimiser state as safetensors, and the one safe ``torch.load``
  (:func:`~pand.engine.checkpoint.safe_torch_load`).
* :mod:`pand.engine.loaders`: DataLoader settings from ``trainer.*``, the seeded per-epoch order of in-memory
  batches, and the image loaders with per-sample replayable augmentation and rank sharding
  (:func:`~pand.engine.loaders.make_train_loader`, :func:`~pand.engine.loaders.make_eval_loader`).

How a stage uses it: it builds its own model, loss and data, then the optimiser (``build_optimizer``) and its LR
(``build_scheduler`` or ``cosine_lr``/``set_lr``) and its :class:`~pand.engine.lifecycle.RunLifecycle`
(``open``/``restore`` for fresh or resumed), and per epoch calls ``train_one_epoch(batches, step)`` where ``step``
runs the forward pass under ``autocast``, checks the loss (``life.finite``), calls ``optimizer_step`` and returns
the values to sum; then it evaluates (``evaluate`` or its own metric), offers the metric to ``life.best`` and
checkpoints (``life.save``). Stage NSD (:mod:`pand.nsd.engine`), Stage PSC (:mod:`pand.psc.loop`), PromptKD's
student (:mod:`pand.promptkd.train`) and PromptSRC teacher (:mod:`pand.promptkd.promptsrc`), and the demo's teacher
and upstream pre-trainings (:mod:`pand.demo.teacher_pretrain`, :mod:`pand.demo.upstream`) work this way.
"""
