"""Semantic anchors ``T [C, D_t]``: the PSC artifact (learned CoOp text features) and the hand-crafted baseline.

The artifact ``learned_text_features.safetensors`` holds ``text_features [C, D]`` (L2-normalised, fp32) and
``ctx`` (the context vectors, so the prompt learner can be rebuilt), with JSON metadata: class names, templated
prompts, n_ctx, ctx_init, csc, prompt_form, class_token_position, template, teacher identity and embed dim,
val/test accuracy (CoOp and zero-shot) and a config hash.

:func:`load_anchors` also reads the seed project's ``learned_text_features.pt`` (keys ``text_features``,
``n_ctx``, ...) with ``torch.load(weights_only=True)``; a file that needs arbitrary unpickling is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from pand.engine.checkpoint import safe_torch_load
from pand.errors import ArtifactError, PandError
from pand.models.teacher import same_teacher, split_identity
from pand.psc.prompt_learner import build_coop_text_model
from pand.utils.io import load_tensors, save_tensors

__all__ = ["ARTIFACT_NAME", "save_anchors", "load_anchors", "handcrafted_anchors", "restore_coop_text_model"]

ARTIFACT_NAME = "learned_text_features.safetensors"
_PICKLE_SUFFIXES = (".pkl", ".pickle")


def handcrafted_anchors(teacher: Any, prompts: Sequence[str]) -> torch.Tensor:
    """VL2Lite baseline anchors: ``n(encode_text(tokenize(prompt_c)))`` for every class.

    Args:
        teacher: a :class:`pand.models.teacher.Teacher`.
        prompts: one hand-crafted prompt per class, in label order (``DataSplits.prompts()``).

    Returns:
        ``[C, D_t]`` float32, L2-normalised rows, on the CPU.
    """
    if isinstance(prompts, str) or not len(prompts):
        raise PandError("handcrafted_anchors needs a non-empty list of prompts, one per class")
    return teacher.encode_text(list(prompts)).float().cpu()


def save_anchors(
    path: str | Path, text_features: torch.Tensor, ctx: Optional[torch.Tensor], meta: Mapping[str, Any]
) -> Path:
    """Write the PSC artifact atomically (``text_features`` re-normalised to unit rows, fp32)."""
    tf = torch.nn.functional.normalize(text_features.detach().float().cpu(), dim=-1)
    tensors = {"text_features": tf}
    if ctx is not None:
        tensors["ctx"] = ctx.detach().float().cpu()
    save_tensors(path, tensors, dict(meta))
    return Path(path)


def _load_torch_file(path: Path) -> Dict[str, Any]:
    obj = safe_torch_load(path, "anchor file", "Rerun Stage PSC or point psc.artifact at a learned_text_features "
                          "file; re-export an old file as a plain dict of tensors/str/int (or as safetensors with "
                          "pand.psc.save_anchors).")
    if not isinstance(obj, dict) or "text_features" not in obj:
        raise ArtifactError(f"{path} holds no 'text_features' tensor; it is not a learned_text_features file")
    return obj


def load_anchors(
    path: str | Path,
    num_classes: Optional[int],
    embed_dim: Optional[int] = None,
    teacher_id: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Read semantic anchors and check that they fit the run.

    Args:
        path: a pand artifact (``.safetensors``) or the seed project's ``learned_text_features.pt``.
        num_classes: expected C (None: not checked).
        embed_dim: expected D_t, the teacher's embedding dim (None: not checked).
        teacher_id: the run teacher's ``identity`` (None: not checked). pand artifacts must name the same arch and
            weights hash; seed ``.pt`` files only record ``clip_model_name``, which must equal the arch.
        class_names: the dataset's class names in label order (None: not checked). A file that stores its class
            names (``class_names``, or ``classnames`` in seed files) must list exactly these.

    Returns:
        ``(text_features [C, D] float32 L2-normalised on the CPU, metadata dict)``.

    Raises:
        ArtifactError: missing, empty or pickle-based file, wrong class count (names both numbers), other class
            names (names the first differences), anchors of another teacher (other embed dim or identity).
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"anchor file not found: {path}. Run Stage PSC first or fix psc.artifact")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ArtifactError(f"{path} is a pickle file; pand never unpickles. Save the anchors as safetensors instead")
    if path.suffix.lower() == ".safetensors":
        try:
            tensors, meta = load_tensors(path)
        except Exception as e:  # noqa: BLE001
            raise ArtifactError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
        if "text_features" not in tensors:
            raise ArtifactError(f"{path} holds no 'text_features' tensor; it is not a PSC artifact")
        feats = tensors["text_features"]
        if "ctx" in tensors:
            meta["ctx"] = tensors["ctx"]
        file_teacher = meta.get("teacher_identity")
    else:
        obj = _load_torch_file(path)
        feats = obj["text_features"]
        meta = {k: v for k, v in obj.items() if k != "text_features"}
        meta.setdefault("format", "seed-pt")
        file_teacher = None
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2:
        got = getattr(feats, "shape", type(feats))
        raise ArtifactError(f"{path}: text_features must be a [C, D] tensor, got {got}")
    feats = feats.float()
    C, D = feats.shape
    if num_classes is not None and C != int(num_classes):
        raise ArtifactError(
            f"{path} has anchors for {C} classes but the dataset has {int(num_classes)} classes. Use the PSC artifact "
            f"of this dataset (or rerun Stage PSC)."
        )
    stored = meta.get("class_names", meta.get("classnames"))
    if class_names is not None and stored is not None:
        want, have = [str(n) for n in class_names], [str(n) for n in stored]
        if want != have:
            diffs = [f"label {i}: file={h!r} dataset={w!r}" for i, (h, w) in enumerate(zip(have, want)) if h != w]
            shown = "; ".join(diffs[:3]) + (f"; ... {len(diffs) - 3} more" if len(diffs) > 3 else "")
            raise ArtifactError(
                f"{path} holds anchors for other classes than this dataset's ({shown or 'other class count'}). "
                f"Anchors of another dataset would silently mislabel every class: use the PSC artifact of this "
                f"dataset, or rerun Stage PSC (drop psc.artifact)."
            )
    if embed_dim is not None and D != int(embed_dim):
        raise ArtifactError(
            f"{path} was made by another teacher: anchor dim {D} but the teacher's embed_dim is {int(embed_dim)}. "
            f"Rerun Stage PSC with this teacher."
        )
    if teacher_id is not None:
        if file_teacher is not None and not same_teacher(str(file_teacher), str(teacher_id)):
            raise ArtifactError(
                f"{path} was made by another teacher ({file_teacher}), not by this run's teacher ({teacher_id}). "
                f"Rerun Stage PSC with this teacher or point psc.artifact at the matching file."
            )
        seed_arch = meta.get("clip_model_name")
        if file_teacher is None and seed_arch and str(seed_arch) != split_identity(teacher_id)[0]:
            raise ArtifactError(f"{path} was made with teacher arch {seed_arch}, not {split_identity(teacher_id)[0]}")
    norms = feats.norm(dim=-1)
    if not bool(torch.isfinite(feats).all()) or bool((norms == 0).any()):
        raise ArtifactError(f"{path}: text_features contain NaN/inf or zero rows")
    return torch.nn.functional.normalize(feats, dim=-1), meta


def restore_coop_text_model(path: str | Path, teacher: Any):
    """Rebuild the trained :class:`pand.psc.prompt_learner.CoOpTextModel` of a pand artifact on ``teacher``.

    The learner settings come from the artifact metadata and ``ctx`` is loaded into it, so
    ``model()`` reproduces ``text_features`` (e.g. for new class names, rebuild with the same ctx).
    """
    feats, meta = load_anchors(path, None, embed_dim=teacher.embed_dim, teacher_id=teacher.identity)
    if "ctx" not in meta:
        raise ArtifactError(f"{path} holds no 'ctx' tensor, so its prompt learner cannot be restored")
    class_names: List[str] = list(meta["class_names"])
    model = build_coop_text_model(
        teacher.model, teacher.tokenizer, class_names, template=meta.get("template", "a photo of a {}."),
        n_ctx=int(meta["n_ctx"]), ctx_init=meta.get("ctx_init"), csc=bool(meta.get("csc", False)),
        class_token_position=meta.get("class_token_position", "end"), prompt_form=meta.get("prompt_form", "template"),
    )
    model.prompt_learner.load_ctx(meta["ctx"])
    return model.to(teacher.device)
