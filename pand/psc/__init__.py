"""Stage PSC: Prompt-aware Semantic Calibration (CoOp context prompts on cached CLIP image features).

Public API (stable; used by Stage NSD and PromptKD):

* :func:`run_psc` ``(cfg, run_dir, splits=None, teacher=None) -> Path`` - train (or reuse) the anchors.
* :func:`load_anchors` ``(path, num_classes, embed_dim=None, teacher_id=None) -> (Tensor[C, D], meta)``.
* :func:`handcrafted_anchors` ``(teacher, prompts) -> Tensor[C, D]`` - VL2Lite baseline anchors.
* :func:`extract_features` - the teacher image-feature cache.
* :class:`PromptLearner`, :class:`TextEncoder`, :class:`CoOpTextModel`, :func:`build_coop_text_model`.

Modules: ``stage`` (:func:`run_psc`: reuse or train, then write), ``loop`` (:func:`train_coop`, the training loop on
:mod:`pand.engine`), ``objective`` (CoOp logits, top-1), ``settings`` (the settings that decide the anchors and their
hash), ``summary`` (artifact metadata, ``summary.json``), ``features``, ``prompt_learner``, ``anchors``.
"""
from .anchors import ARTIFACT_NAME, handcrafted_anchors, load_anchors, restore_coop_text_model, save_anchors
from .features import extract_features
from .prompt_learner import CoOpTextModel, PromptLearner, TextEncoder, build_coop_text_model, class_strings
from .loop import PSCResult, train_coop
from .objective import accuracy, coop_logits
from .stage import run_psc

__all__ = [
    "ARTIFACT_NAME", "run_psc", "load_anchors", "handcrafted_anchors", "save_anchors", "restore_coop_text_model",
    "extract_features", "PromptLearner", "TextEncoder", "CoOpTextModel", "build_coop_text_model", "class_strings",
    "accuracy", "coop_logits", "PSCResult", "train_coop",
]
