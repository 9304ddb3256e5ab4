"""Pre-stored teacher class vectors ``T [C, D_t]``: computed ONCE by the teacher's text side, then only read.

Sources (``promptkd.teacher_prompts``):

* ``promptsrc`` (default, the reference's teacher): deep vision + language prompts trained with PromptSRC's
  self-regularisation on the base classes (:mod:`pand.promptkd.promptsrc`); the learned text prompts are re-applied
  to every class name, and the prompted image tower also gives the teacher image features.
* ``handcrafted``: ``n(encode_text(template.format(name)))`` per class (:func:`pand.psc.handcrafted_anchors`).
* ``coop`` (old name ``psc``): the teacher prompt-tuned by Stage PSC (CoOp context vectors, text side only; the
  image tower stays the frozen one). For the base-to-novel protocol the context
  is learned on the **base classes only** (PSC gets a base-only view of the splits, labels relabelled
  ``0..m-1``); the shared context is then re-applied to every class name, novel ones included, as the reference
  re-applies its PromptSRC teacher's context. Class-specific context (``psc.csc=true``) cannot transfer to novel
  classes and is refused. A given ``psc.artifact`` with a ``ctx`` tensor is re-applied the same way; a seed ``.pt``
  file without ``ctx`` is used as is (its rows must match the classes) and flagged in the metadata.

The vectors are written to ``run_dir/promptkd/class_vectors.safetensors`` (``class_vectors`` fp32, L2-normalised,
label order) with JSON metadata (source, class names, prompts, teacher identity, embed dim, teacher logit scale,
base/novel ids). After that the teacher's text encoder is never run again by the recipe.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

import torch

from pand.errors import ArtifactError, PandError
from pand.models.teacher import same_teacher
from pand.psc import handcrafted_anchors, load_anchors, run_psc
from pand.psc.prompt_learner import build_coop_text_model
from pand.utils.io import load_tensors, save_tensors

from .data import base_only_splits
from .promptsrc import PROMPTSRC_ARTIFACT, load_promptsrc_artifact, promptsrc_text_features, train_promptsrc_teacher

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PromptKDCfg, RunCfg

__all__ = [
    "CLASS_VECTORS_NAME", "save_class_vectors", "load_class_vectors", "psc_class_vectors", "coop_text_features",
    "compute_class_vectors", "promptsrc_class_vectors", "class_vectors_for", "teacher_prompts_source",
    "stored_class_vectors", "prepare_class_vectors",
]

CLASS_VECTORS_NAME = "class_vectors.safetensors"


def teacher_prompts_source(value: Any) -> str:
    """The canonical ``promptkd.teacher_prompts`` value: ``promptsrc``, ``coop`` (also for the old ``psc``) or
    ``handcrafted``.

    Raises:
        PandError: any other value.
    """
    v = str(value)
    if v == "psc":
        return "coop"
    if v not in ("promptsrc", "coop", "handcrafted"):
        raise PandError(f"unknown promptkd.teacher_prompts '{v}'. Valid choices: promptsrc, coop, handcrafted")
    return v


def save_class_vectors(path: str | Path, vectors: torch.Tensor, meta: Dict[str, Any]) -> Path:
    """Write ``class_vectors [C, D]`` (re-normalised rows, fp32) and ``meta`` atomically as safetensors."""
    v = torch.nn.functional.normalize(vectors.detach().float().cpu(), dim=-1)
    save_tensors(path, {"class_vectors": v}, {**meta, "num_classes": int(v.shape[0]), "embed_dim": int(v.shape[1])})
    return Path(path)


def load_class_vectors(
    path: str | Path,
    class_names: Optional[Sequence[str]] = None,
    embed_dim: Optional[int] = None,
    teacher_id: Optional[str] = None,
) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Read class vectors and check that they fit the run.

    Args:
        path: a file written by :func:`save_class_vectors`.
        class_names: expected names in label order (None: not checked).
        embed_dim: expected ``D_t`` (the student projector's output; None: not checked).
        teacher_id: expected teacher identity (None: not checked).

    Returns:
        ``(class_vectors [C, D] float32, metadata)``.

    Raises:
        ArtifactError: missing or unreadable file, other class names, other dimension, other teacher.
    """
    path = Path(path)
    try:
        tensors, meta = load_tensors(path)
    except Exception as e:  # noqa: BLE001 - missing / corrupt file
        raise ArtifactError(
            f"cannot read class vectors {path} ({type(e).__name__}: {e}); delete it to recompute"
        ) from e
    vec = tensors.get("class_vectors")
    if vec is None or vec.ndim != 2:
        raise ArtifactError(f"{path} holds no [C, D] 'class_vectors' tensor")
    if class_names is not None and list(meta.get("class_names", [])) != list(class_names):
        raise ArtifactError(
            f"{path} was computed for other classes ({len(meta.get('class_names', []))} names) than this run's "
            f"{len(class_names)}; delete it (or use another run directory) to recompute."
        )
    if embed_dim is not None and int(vec.shape[1]) != int(embed_dim):
        raise ArtifactError(
            f"class vectors in {path} have dimension {int(vec.shape[1])} but the student projector outputs "
            f"{int(embed_dim)} (the teacher's embed_dim). They come from another teacher; recompute them."
        )
    if teacher_id is not None and meta.get("teacher_identity") is not None:
        if not same_teacher(str(meta["teacher_identity"]), str(teacher_id)):
            raise ArtifactError(
                f"{path} was computed by teacher {meta['teacher_identity']}, not by this run's {teacher_id}; "
                f"delete it to recompute."
            )
    return vec.float(), meta


def _require_shared_context(class_specific: bool) -> None:
    if class_specific:
        raise PandError(
            "PromptKD re-applies the PSC context to every class (novel and cross-dataset ones included), which needs "
            "a shared context: set psc.csc=false, or promptkd.teacher_prompts=promptsrc|handcrafted."
        )


@torch.no_grad()
def coop_text_features(teacher: Any, ctx: torch.Tensor, meta: Dict[str, Any], class_names: Sequence[str],
                       template: str) -> torch.Tensor:
    """Text features of ``class_names`` through the teacher with learned CoOp context ``ctx`` (``[C, D]``, normed).

    The prompt-learner settings (``n_ctx``, ``ctx_init``, ``prompt_form``, ``class_token_position``) come from the
    PSC artifact's metadata; only a shared context (``csc=false``) can be applied to new class names.
    """
    _require_shared_context(bool(meta.get("csc", False)) or ctx.ndim != 2)
    model = build_coop_text_model(
        teacher.model, teacher.tokenizer, list(class_names), template=meta.get("template", template),
        n_ctx=int(meta.get("n_ctx", ctx.shape[0])), ctx_init=meta.get("ctx_init"), csc=False,
        class_token_position=meta.get("class_token_position", "end"),
        prompt_form=meta.get("prompt_form", "template"),
    )
    model.prompt_learner.load_ctx(ctx)
    model = model.to(teacher.device).eval()
    with teacher.autocast():
        text = model()
    return torch.nn.functional.normalize(text.float(), dim=-1).cpu()


def psc_class_vectors(cfg: RunCfg, run_dir: Path, splits: Any, teacher: Any, base_classes: Sequence[int],
                      progress: bool = True) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Class vectors of all classes from a PSC teacher trained on the base classes (or a given artifact).

    Returns:
        ``(vectors [C, D] on the CPU, metadata about the PSC artifact used)``.
    """
    class_names = list(splits.class_names)
    template = str(splits.template)
    if cfg.psc.artifact:
        path = Path(str(cfg.psc.artifact)).expanduser()
        feats, meta = load_anchors(path, None, embed_dim=teacher.embed_dim, teacher_id=teacher.identity)
        info = {"psc_artifact": str(path), "psc_trained_on": "given artifact (classes as recorded in it)"}
    else:
        _require_shared_context(bool(cfg.psc.csc))
        path = run_psc(cfg, run_dir, splits=base_only_splits(splits, base_classes), teacher=teacher,
                       progress=progress)
        feats, meta = load_anchors(path, len(base_classes), embed_dim=teacher.embed_dim, teacher_id=teacher.identity)
        info = {"psc_artifact": str(path), "psc_trained_on": "base classes only"}
    ctx = meta.get("ctx")
    if isinstance(ctx, torch.Tensor):
        vectors = coop_text_features(teacher, ctx, meta, class_names, template)
        info["psc_context"] = "learned context re-applied to all class names"
    elif feats.shape[0] == len(class_names):
        vectors = feats
        info["psc_context"] = "artifact rows used as is (no ctx stored): the classes its teacher saw are unknown"
    else:
        raise ArtifactError(
            f"{path} has {feats.shape[0]} class rows and no learned context, so it cannot give vectors for this "
            f"run's {len(class_names)} classes. Use a pand PSC artifact (with ctx) or teacher_prompts=handcrafted."
        )
    info["psc_val_acc_base"] = meta.get("val_acc")
    return vectors, info


def compute_class_vectors(cfg: RunCfg, run_dir: Path, splits: Any, teacher: Any, base_classes: Sequence[int],
                          progress: bool = True) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Run the teacher's text side once for every class of the run (``promptkd.teacher_prompts``).

    Args:
        cfg: the run configuration.
        run_dir: the run directory (Stage PSC writes under ``run_dir/psc``).
        splits: the run's :class:`pand.data.DataSplits`.
        teacher: the :class:`pand.models.teacher.Teacher`.
        base_classes: base class ids (PSC is trained on these only).
        progress: tqdm bars in Stage PSC.

    Returns:
        ``(vectors [C, D] fp32 L2-normalised on the CPU, metadata)`` (not yet saved).
    """
    names, tmpl = list(splits.class_names), str(splits.template)
    source = teacher_prompts_source(cfg.promptkd.teacher_prompts)
    meta: Dict[str, Any] = {"source": source, "class_names": names, "template": tmpl,
                            "teacher_identity": teacher.identity, "teacher_logit_scale": float(teacher.logit_scale)}
    if source == "handcrafted":
        meta["prompts"] = [tmpl.format(n) for n in names]
        vectors = handcrafted_anchors(teacher, meta["prompts"])
    elif source == "coop":
        vectors, info = psc_class_vectors(cfg, run_dir, splits, teacher, base_classes, progress=progress)
        meta.update(info)
    else:
        vectors, info = promptsrc_class_vectors(cfg, run_dir, splits, teacher, base_classes, progress=progress)
        meta.update(info)
    return torch.nn.functional.normalize(vectors.float().cpu(), dim=-1), meta


def promptsrc_class_vectors(cfg: RunCfg, run_dir: Path, splits: Any, teacher: Any, base_classes: Sequence[int],
                            progress: bool = True) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Class vectors of all classes from a PromptSRC teacher trained on the base classes (or a given artifact).

    The trained prompts are written to ``run_dir/promptkd/promptsrc_teacher.safetensors`` (also when a given
    ``promptkd.promptsrc.artifact`` is used, so the run directory is self-contained).

    Returns:
        ``(vectors [C, D] on the CPU, metadata naming the artifact)``.
    """
    given = cfg.promptkd.promptsrc.artifact
    if given:
        prompts, pmeta = load_promptsrc_artifact(Path(str(given)).expanduser(), teacher)
        trained_on = f"given artifact {given} ({pmeta.get('trained_on')})"
    else:
        prompts, pmeta = train_promptsrc_teacher(cfg.promptkd.promptsrc, cfg.trainer, splits, teacher, base_classes,
                                                 progress=progress,
                                                 checkpoints=Path(run_dir) / "promptkd" / "promptsrc_checkpoints")
        trained_on = str(pmeta["trained_on"])
    path = Path(run_dir) / "promptkd" / PROMPTSRC_ARTIFACT
    save_tensors(path, prompts, pmeta)
    vectors = promptsrc_text_features(teacher, prompts, pmeta, list(splits.class_names))
    last = (pmeta.get("history") or [{}])[-1]
    return vectors, {"promptsrc_artifact": str(path), "promptsrc_trained_on": trained_on,
                     "promptsrc_prompts_sha": pmeta.get("prompts_sha"), "promptsrc_settings": pmeta.get("settings"),
                     "promptsrc_final_losses": {k: last.get(k) for k in ("ce", "scl_text", "scl_image", "scl_logits")}}


def class_vectors_for(teacher: Any, class_names: Sequence[str], template: str, run_meta: Dict[str, Any]
                      ) -> Tuple[torch.Tensor, str]:
    """Class vectors of another dataset's classes, made the way the run's were (cross-dataset evaluation).

    Args:
        teacher: the run's teacher.
        class_names, template: the other dataset's names and template.
        run_meta: metadata of the run's class vectors (``source``, ``psc_artifact``).

    Returns:
        ``(vectors [C', D] fp32 normalised on the CPU, description of how they were made)``.
    """
    if run_meta.get("source") == "promptsrc":
        prompts, pmeta = load_promptsrc_artifact(str(run_meta.get("promptsrc_artifact")), teacher)
        vectors = promptsrc_text_features(teacher, prompts, pmeta, list(class_names))
        return torch.nn.functional.normalize(vectors.float(), dim=-1), "promptsrc prompts re-applied"
    if run_meta.get("source") in ("coop", "psc"):
        path = str(run_meta.get("psc_artifact"))
        _, meta = load_anchors(path, None, embed_dim=teacher.embed_dim, teacher_id=teacher.identity)
        if isinstance(meta.get("ctx"), torch.Tensor):
            return coop_text_features(teacher, meta["ctx"], meta, class_names, template), "psc context re-applied"
        how = "handcrafted template (the PSC artifact stores no context to re-apply)"
    else:
        how = "handcrafted template"
    vectors = handcrafted_anchors(teacher, [template.format(n) for n in class_names])
    return torch.nn.functional.normalize(vectors.float(), dim=-1), how


def _vectors_match(meta: Dict[str, Any], pk_cfg: PromptKDCfg, splits: Any, teacher: Any) -> bool:
    """Stored class vectors were made with this run's ``teacher_prompts``, class names, template and teacher."""
    return (teacher_prompts_source(meta.get("source")) == teacher_prompts_source(pk_cfg.teacher_prompts)
            and list(meta.get("class_names", [])) == list(splits.class_names)
            and meta.get("template") == str(splits.template)
            and same_teacher(str(meta.get("teacher_identity")), teacher.identity))


def stored_class_vectors(pk_cfg: PromptKDCfg, run_dir: Path, splits: Any, teacher: Any, resume: bool
                         ) -> Optional[Tuple[torch.Tensor, Dict[str, Any]]]:
    """On ``resume``, the class vectors stored in ``run_dir/promptkd/`` (checked to fit this run, nothing written);
    else None (also when none are stored yet).

    Raises:
        ArtifactError: stored vectors made by another teacher or for other classes, template or ``teacher_prompts``
            (the checkpoint was trained against them).
    """
    path = Path(run_dir) / "promptkd" / CLASS_VECTORS_NAME
    if not (resume and path.is_file()):
        return None
    vectors, meta = load_class_vectors(path, embed_dim=teacher.embed_dim)
    if not _vectors_match(meta, pk_cfg, splits, teacher):
        raise ArtifactError(
            f"{path} was made by another teacher, class list, template or teacher_prompts setting than this "
            f"resumed run; resume with the original settings or start a new --run-dir"
        )
    return vectors, meta


def prepare_class_vectors(cfg: RunCfg, run_dir: Path, splits: Any, teacher: Any, base: Sequence[int], resume: bool,
                          progress: bool = True) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Compute the class vectors once for this run and save them; a resumed run reads the stored ones back.

    Raises:
        ArtifactError: on ``resume``, stored vectors that do not fit the run (:func:`stored_class_vectors`).

    Returns:
        ``(vectors [C, D_t] fp32 on the CPU, metadata)``.
    """
    stored = stored_class_vectors(cfg.promptkd, run_dir, splits, teacher, resume)
    if stored is not None:
        return stored
    path = Path(run_dir) / "promptkd" / CLASS_VECTORS_NAME
    vectors, meta = compute_class_vectors(cfg, Path(run_dir), splits, teacher, base, progress=progress)
    save_class_vectors(path, vectors, meta)
    return load_class_vectors(path, class_names=splits.class_names, embed_dim=teacher.embed_dim,
                              teacher_id=teacher.identity)
