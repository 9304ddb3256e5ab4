"""pand: distil a CLIP teacher into a lightweight fine-grained classifier (PAND, PromptKD).

Library layout (dependencies point one way; nothing here imports the CLI):

* :mod:`pand.config`  - structured run configuration (OmegaConf) and group composition
* :mod:`pand.data`    - official dataset layouts, held-out validation, transforms, synthetic benchmark
* :mod:`pand.models`  - open_clip teacher, student registry, alignment heads
* :mod:`pand.losses`  - pure loss functions (NLRD, text-logit KD, PromptKD KD)
* :mod:`pand.psc`     - Stage PSC (feature cache, CoOp prompt learner, anchors)
* :mod:`pand.nsd`     - Stage NSD training engine
* :mod:`pand.utils`   - atomic I/O, hashing, seeding, distributed helpers
"""
__version__ = "0.1.0"
