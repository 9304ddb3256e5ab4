"""The names the optimiser factory builds (:func:`pand.engine.optim.build_optimizer`,
:func:`pand.engine.optim.build_scheduler`), torch-free: the config schema offers exactly these as the choices of
``psc.optimizer``, ``nsd.optimizer``, ``promptkd.optimizer`` and ``nsd.scheduler`` (``pand.config.schema.CHOICES``),
so the two lists cannot drift (tests/config/test_config_choices.py).
"""
from __future__ import annotations

__all__ = ["OPTIMIZERS", "SCHEDULERS"]

#: ``sgd`` (``torch.optim.SGD`` with momentum) | ``adamw`` (``torch.optim.AdamW``)
OPTIMIZERS = ("sgd", "adamw")
#: per-epoch schedules: ``cosine`` | ``step`` | ``none`` (constant)
SCHEDULERS = ("cosine", "step", "none")
