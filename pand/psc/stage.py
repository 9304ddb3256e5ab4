"""Stage PSC end to end (:func:`run_psc`): reuse a matching anchor artifact, or extract the teacher's image
features, train the CoOp context (:mod:`pand.psc.loop`) and write the artifact and ``summary.json``.

Test accuracy is measured once, for the kept context only; the zero-shot accuracy of the hand-crafted template is
reported beside it. Outputs under ``run_dir/psc/``: ``metrics.jsonl``, ``summary.json``,
``learned_text_features.safetensors`` (:mod:`pand.psc.anchors`) and ``checkpoints/`` (the per-epoch resume state of
the run lifecycle, :mod:`pand.engine.lifecycle`).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import torch

from pand.data import build_splits
from pand.errors import ArtifactError, PandError
from pand.models.teacher import create_teacher, same_teacher, split_identity
from pand.utils.digest import content_hash, samples_hash, stat_hash
from pand.utils.distributed import select_device
from pand.utils.io import load_tensors

from .anchors import ARTIFACT_NAME, handcrafted_anchors, load_anchors, save_anchors
from .features import extract_features
from .loop import train_coop
from .objective import accuracy
from .prompt_learner import build_coop_text_model
from .settings import psc_config_hash
from .summary import SPLITS, artifact_meta, write_summary

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import DataCfg, PSCCfg, RunCfg

__all__ = ["run_psc"]


def _check_given_artifact(psc_cfg: PSCCfg, data_cfg: DataCfg, splits: Any, teacher: Any) -> Path:
    """``psc.artifact``, checked against the class count (of ``splits`` or ``data.class_names``) and the
    teacher's embedding dimension and identity when given."""
    path = Path(str(psc_cfg.artifact)).expanduser()
    num_classes = len(splits.class_names) if splits is not None else None
    if num_classes is None and data_cfg.class_names:
        num_classes = len(data_cfg.class_names)
    load_anchors(path, num_classes, embed_dim=getattr(teacher, "embed_dim", None),
                 teacher_id=getattr(teacher, "identity", None),
                 class_names=list(splits.class_names) if splits is not None else None)
    return path


def _reusable(artifact: Path, psc_cfg: PSCCfg, parts: Dict[str, Any], chash: str, class_names, teacher: Any,
              reuse_only: bool, legacy_splits: Tuple[Any, Any] = (None, None)) -> bool:
    """Whether the artifact already in the run directory was made from these inputs (same classes, teacher and
    config hash; for a resumed run also the hash of before image fingerprints were part of it)."""
    if not artifact.is_file():
        return False
    try:
        _, meta = load_tensors(artifact)
        fits = (meta.get("class_names") == class_names
                and same_teacher(str(meta.get("teacher_identity")), teacher.identity))
        if fits and meta.get("config_hash") == chash:
            return True
        # an artifact written before file fingerprints were part of the hash: kept for a resumed run only
        legacy = psc_config_hash(psc_cfg, {k: v for k, v in parts.items() if k != "content"})
        if fits and reuse_only and meta.get("config_hash") == psc_config_hash(psc_cfg, {**parts, "content": [
                stat_hash(splits_) if splits_ is not None else None for splits_ in legacy_splits]}):
            # fingerprinted by (size, mtime) only (pand <= 0.1.0): the same files by that measure
            warnings.warn(f"{artifact} was fingerprinted by file size and mtime (before content digests): reused "
                          f"for this resumed run")
            return True
        if fits and reuse_only and meta.get("config_hash") == legacy:
            warnings.warn(f"{artifact} predates image fingerprints in its config hash: reused for this resumed "
                          f"run without checking that the train/val image files are unchanged")
            return True
    except Exception as e:  # noqa: BLE001 - unreadable artifact: recompute
        warnings.warn(f"recomputing PSC: existing artifact {artifact} is unreadable ({e})")
    return False


def run_psc(cfg: RunCfg, run_dir: str | Path, splits: Any = None, teacher: Any = None, progress: bool = True,
            reuse_only: bool = False) -> Path:
    """Run Stage PSC and return the path of the anchor artifact.

    ``cfg.psc.artifact`` (a path) short-circuits to that file after checking it (class count when ``splits`` is
    given, teacher embed dim / identity when ``teacher`` is given). Otherwise an artifact already in
    ``run_dir/psc/`` is reused when its config hash matches (same teacher weights, class names, template, data
    samples, psc settings and seed); else the features are extracted (cached under ``cfg.cache_dir/features``),
    the context is trained and the artifact written.

    Args:
        cfg: the run configuration (:class:`pand.config.schema.RunCfg`).
        run_dir: the run directory; outputs go to ``run_dir/psc/``.
        splits: prebuilt :class:`pand.data.DataSplits` (default ``pand.data.build_splits(cfg.data, cfg.cache_dir)``).
        teacher: a prebuilt :class:`pand.models.teacher.Teacher` (default ``create_teacher(cfg.teacher)``).
        progress: tqdm bars.
        reuse_only: refuse instead of (re)training when no matching artifact exists (a resumed NSD run must keep
            the anchors its checkpoint was trained with).

    Returns:
        Path of ``learned_text_features.safetensors`` (or of ``cfg.psc.artifact``).

    Raises:
        ArtifactError: ``reuse_only`` and the artifact in ``run_dir/psc/`` is missing or no longer matches.

    Note:
        Runs in the calling process only; under DDP call it on rank 0 before the other ranks load the artifact.
    """
    if cfg.psc.artifact:
        return _check_given_artifact(cfg.psc, cfg.data, splits, teacher)

    out_dir = Path(run_dir) / "psc"
    artifact = out_dir / ARTIFACT_NAME
    if splits is None:
        splits = build_splits(cfg.data, cache_dir=cfg.cache_dir)
    if teacher is None:
        teacher = create_teacher(cfg.teacher, device=select_device(cfg.trainer.accelerator))
    class_names = list(splits.class_names)
    template = str(getattr(splits, "template", None) or cfg.data.template)
    seed = int(cfg.trainer.seed)
    arch, _, whash = split_identity(teacher.identity)
    parts = {
        "teacher": f"{arch}|{whash}", "teacher_image_size": teacher.image_size, "class_names": class_names,
        "template": template, "seed": seed, "data": str(cfg.data.name),
        "train": samples_hash(splits.train), "val": samples_hash(splits.val) if splits.val is not None else None,
        # image files rewritten in place (same paths) give other features, so other anchors
        "content": [content_hash(splits.train), content_hash(splits.val) if splits.val is not None else None],
    }
    chash = psc_config_hash(cfg.psc, parts)
    if _reusable(artifact, cfg.psc, parts, chash, class_names, teacher, reuse_only, (splits.train, splits.val)):
        return artifact
    if reuse_only:
        raise ArtifactError(
            f"{artifact} is missing or no longer matches this run's inputs (teacher, class names, template, PSC "
            f"settings, or the train/val image files changed since the NSD checkpoint was written); resuming would "
            f"continue the student with other anchors. Restore the original inputs, or start a new run with another "
            f"--run-dir."
        )

    t_start = time.time()
    cache = Path(cfg.cache_dir) / "features"
    dname = str(cfg.data.name)

    def feats(split: str):
        ds = getattr(splits, split)
        if ds is None or len(ds) == 0:
            return None
        return extract_features(teacher, ds, cache, key_extra={"split": split, "data": dname},
                                batch_size=int(cfg.teacher.batch_size), num_workers=int(cfg.trainer.num_workers),
                                progress=progress)

    features = {s: feats(s) for s in SPLITS}
    if features["train"] is None:
        raise PandError("Stage PSC: the train split is empty")
    t_feat = time.time() - t_start

    prompts = [template.format(n) for n in class_names]
    zs_text = handcrafted_anchors(teacher, prompts)
    zero_shot = _accuracies(features, zs_text)

    model = build_coop_text_model(teacher.model, teacher.tokenizer, class_names, cfg.psc, template=template,
                                  seed=seed).to(teacher.device)
    res = train_coop(model, features["train"], features["val"], cfg.psc, teacher.logit_scale, out_dir, seed=seed,
                     config_hash=chash, autocast=teacher.autocast, amp_dtype=teacher.amp_dtype, progress=progress,
                     skip_nonfinite=bool(cfg.trainer.skip_nonfinite_steps))
    model.prompt_learner.load_ctx(res.best_ctx)
    model.eval()
    with torch.no_grad():
        text = model().float().cpu()
    coop = _accuracies(features, text)

    meta = artifact_meta(cfg.psc, teacher, class_names, prompts, template,
                         model.prompt_learner.tokenized_prompts.shape[1], coop, zero_shot, res, chash)
    save_anchors(artifact, text, res.best_ctx, meta)
    write_summary(out_dir / "summary.json", cfg.psc, artifact, teacher, len(class_names), features, coop, zero_shot,
                  res, chash, {"features": round(t_feat, 3), "total": round(time.time() - t_start, 3)})
    return artifact


def _accuracies(features: Dict[str, Optional[tuple]], text: torch.Tensor) -> Dict[str, Optional[float]]:
    """Top-1 of ``text`` ``[C, D]`` on each split's cached features (None for an empty split)."""
    return {s: (accuracy(d[0], d[1], text) if d is not None else None) for s, d in features.items()}
