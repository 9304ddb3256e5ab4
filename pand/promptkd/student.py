"""The PromptKD student: a frozen open_clip ViT image encoder with deep visual prompts, plus a projector.

Deep visual prompts (IVLP / VPT-deep, ``docs/method.md``, "PromptKD"), with ``n`` = ``n_ctx_vision`` and
``d`` = ``prompt_depth``:

* input: ``n`` learnable tokens ``P_0 [n, W]`` are appended **after** ``[CLS] + patches`` (after the positional
  embedding and patch dropout, before ``ln_pre``), so the sequence is ``[B, 1 + N_patch + n, W]``;
* transformer layers ``i = 1 .. d-1``: the last ``n`` tokens of the layer input are **replaced** by fresh learnable
  ``P_i [n, W]`` (not normalised, no positional embedding, as in the reference);
* layers ``i >= d`` carry the previous prompt outputs unchanged;
* the prompt tokens are dropped before pooling, so ``tok`` pooling reads [CLS] and ``avg`` pooling averages the
  patches only; then ``ln_post`` and ``@ proj`` as in open_clip, giving ``f [B, D_s]``.

``d = 0`` (or ``n = 0``) means no prompts at all: the encoder then equals open_clip's own ``VisionTransformer``.
``d`` may not exceed the number of transformer layers. All prompts live in one parameter ``prompts [d, n, W]``,
initialised ``N(0, 0.02^2)``.

Projector (the reference's ``Feature_Trans_Module_two_layer``, 1x1 convs on ``[B, D_s, 1, 1]``, i.e.)
``Linear(D_s -> D_t) -> BatchNorm1d(D_t) -> ReLU -> Linear(D_t -> D_t)``.

Student feature ``v = n(projector(f)) [B, D_t]``; student logits ``s * v @ T^T`` with the pre-stored teacher class
vectors ``T [C, D_t]`` (:class:`PromptKDClassifier`, the deployable graph).

Only ``prompts`` and the projector train (and, with ``train_layernorm``, the encoder's LayerNorms); the encoder is
frozen and always kept in eval mode. Prompts are kept in fp32 and cast to the activations' dtype in the forward
(the reference's pure-fp16 weights are not reproduced).
"""
from __future__ import annotations

import functools
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import open_clip
from open_clip.pretrained import get_pretrained_cfg
import torch
from omegaconf import OmegaConf
from torch import nn

from pand import __version__
from pand.errors import ArtifactError, PandError
from pand.models.clip_preprocess import open_clip_preprocess_spec
from pand.models.teacher import register_model_configs
from pand.models.teacher_checkpoint import build_with_local_weights
from pand.utils.io import load_tensors, save_tensors
from pand_runtime.preprocess_spec import PreprocessSpec

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PromptKDCfg, TeacherCfg

__all__ = [
    "PromptedVisionEncoder",
    "make_projector",
    "PromptKDStudent",
    "PromptKDClassifier",
    "create_student_visual",
    "build_promptkd_student",
    "build_promptkd_classifier",
    "teacher_embed_dim",
    "student_preprocess",
    "load_promptkd_classifier",
    "save_promptkd_classifier",
    "classifier_metadata",
    "set_trainable",
    "trainable_parameters",
]


class PromptedVisionEncoder(nn.Module):
    """open_clip ``VisionTransformer`` walked module by module, with deep visual prompts.

    Args:
        visual: an open_clip ``VisionTransformer`` (``model.visual`` of a ViT CLIP). Attentional pooling
            (CoCa) is not supported.
        n_ctx: prompt tokens per layer (``n_ctx_vision``).
        depth: number of prompted layers ``d`` (0 = no prompts).
        init_std: standard deviation of the prompt initialisation.
    """

    def __init__(self, visual: nn.Module, n_ctx: int = 4, depth: int = 9, init_std: float = 0.02):
        super().__init__()
        for attr in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post"):
            if not hasattr(visual, attr):
                raise PandError(
                    f"promptkd.student_arch must be an open_clip ViT (VisionTransformer); got {type(visual).__name__} "
                    f"without '{attr}'. Pick a ViT architecture such as ViT-B-16."
                )
        if getattr(visual, "attn_pool", None) is not None:
            raise PandError("promptkd: open_clip ViTs with attentional pooling (CoCa) are not supported as students")
        layers = len(visual.transformer.resblocks)
        if n_ctx < 0 or depth < 0 or depth > layers:
            raise PandError(
                f"promptkd.prompt_depth={depth} / n_ctx_vision={n_ctx} do not fit a {layers}-layer encoder: "
                f"need 0 <= prompt_depth <= {layers} and n_ctx_vision >= 0"
            )
        self.visual = visual
        self.width = int(visual.transformer.width)
        self.output_dim = int(visual.output_dim)
        self.n_ctx = int(n_ctx) if depth > 0 else 0
        self.depth = int(depth) if n_ctx > 0 else 0
        self.prompts = nn.Parameter(torch.empty(self.depth, self.n_ctx, self.width))
        nn.init.normal_(self.prompts, std=init_std)
        self.visual.eval()

    @property
    def batch_first(self) -> bool:
        return bool(getattr(self.visual.transformer, "batch_first", True))

    def train(self, mode: bool = True) -> "PromptedVisionEncoder":
        """The frozen open_clip modules stay in eval mode (patch dropout off); only the flag is recorded."""
        super().train(mode)
        self.visual.eval()
        return self

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(x)  # [B, W, g, g]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, g*g, W]
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # [B, 1 + g*g, W]
        x = x + v.positional_embedding.to(x.dtype)
        return v.patch_dropout(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``[B, 3, H, W]`` (normalised) -> pooled, projected feature ``f [B, D_s]`` (not normalised)."""
        v, n = self.visual, self.n_ctx
        x = self._embed(x)
        if n:
            x = torch.cat([x, self.prompts[0].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
        x = v.ln_pre(x)  # [B, L, W]
        if not self.batch_first:
            x = x.transpose(0, 1)  # NLD -> LND for a sequence-first transformer
        seq_dim = 1 if self.batch_first else 0
        for i, block in enumerate(v.transformer.resblocks):
            if 1 <= i < self.depth:
                keep = x.narrow(seq_dim, 0, x.shape[seq_dim] - n)
                p = self.prompts[i].to(x.dtype).unsqueeze(1 - seq_dim)  # [1, n, W] or [n, 1, W]
                p = p.expand(x.shape[0], -1, -1) if self.batch_first else p.expand(-1, x.shape[1], -1)
                x = torch.cat([keep, p], dim=seq_dim)
            x = block(x)
        if not self.batch_first:
            x = x.transpose(0, 1)
        if n:
            x = x[:, :-n]  # drop the prompt tokens before pooling
        return self._pool(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        pool_type = getattr(v, "pool_type", "tok")
        if not getattr(v, "final_ln_after_pool", False):
            x = v.ln_post(x)
        if pool_type == "avg":
            pooled = x[:, 1:].mean(dim=1)
        elif pool_type == "tok":
            pooled = x[:, 0]
        else:
            raise PandError(f"promptkd: open_clip pool_type '{pool_type}' gives no pooled feature; use tok or avg")
        if getattr(v, "final_ln_after_pool", False):
            pooled = v.ln_post(pooled)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled


def make_projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear(in_dim -> out_dim) -> BatchNorm1d(out_dim) -> ReLU -> Linear(out_dim -> out_dim)``."""
    return nn.Sequential(
        nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim)
    )


class PromptKDStudent(nn.Module):
    """Prompted encoder + projector: ``v = n(projector(encoder(x)))`` of shape ``[B, D_t]``.

    Args:
        encoder: the :class:`PromptedVisionEncoder`.
        embed_dim: ``D_t``, the teacher's embedding dimension (dimension of the class vectors).
        logit_scale: the fixed scale ``s`` of the student logits.
    """

    def __init__(self, encoder: PromptedVisionEncoder, embed_dim: int, logit_scale: float):
        super().__init__()
        self.encoder = encoder
        self.embed_dim = int(embed_dim)
        self.projector = make_projector(encoder.output_dim, self.embed_dim)
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, projected encoder feature ``f [B, D_s]`` (before the projector)."""
        return self.encoder(x)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised student embedding ``v [B, D_t]``."""
        f = self.projector(self.encoder(x))
        return f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x)


class PromptKDClassifier(nn.Module):
    """The deployable graph: image -> prompted encoder -> projector -> normalise -> ``s * v @ T^T`` -> logits.

    ``class_vectors`` (``T [C, D_t]``, L2-normalised) and ``logit_scale`` are buffers, so they travel in the
    state dict (``student.safetensors``) and are constants of the exported graph.

    Args:
        student: the trained :class:`PromptKDStudent`.
        class_vectors: ``[C, D_t]`` pre-stored teacher class vectors (all classes, label order).
    """

    def __init__(self, student: PromptKDStudent, class_vectors: torch.Tensor):
        super().__init__()
        if class_vectors.ndim != 2 or class_vectors.shape[1] != student.embed_dim:
            raise ArtifactError(
                f"class vectors of shape {tuple(class_vectors.shape)} do not fit the student projector output "
                f"D_t={student.embed_dim}. Recompute the class vectors with the same teacher "
                f"(delete the stale class_vectors.safetensors) or fix promptkd/teacher settings."
            )
        self.student = student
        self.register_buffer("class_vectors", class_vectors.detach().float().clone())
        self.num_classes = int(class_vectors.shape[0])
        self.embed_dim = student.embed_dim

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embedding ``[B, D_t]``."""
        return self.student.encode_image(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image ``[B, 3, H, W]`` -> logits ``[B, C]``."""
        v = self.student.encode_image(x)
        return self.student.logit_scale.to(v.dtype) * v @ self.class_vectors.to(v.dtype).T


def create_student_visual(arch: str, pretrained: Optional[str] = None) -> Tuple[nn.Module, float, Dict[str, Any]]:
    """Build the open_clip model ``arch`` and keep only its image tower.

    Args:
        arch: open_clip architecture name (``ViT-B-16``, ``pand-tiny-vit-s``, ...).
        pretrained: open_clip pretrained tag (``openai``: built with QuickGELU, as the tag's weights need), a local
            checkpoint file (read as the teacher's: :func:`pand.models.teacher_checkpoint.build_with_local_weights`),
            or None (random init).

    Returns:
        ``(visual, logit_scale, preprocess)``: the ``VisionTransformer``, the model's own ``exp(logit_scale)``
        and its preprocess config (``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode``).
    """
    register_model_configs()  # pand's own architectures (pand-tiny-vit, pand-tiny-vit-s)
    if open_clip.get_model_config(arch) is None and not arch.startswith(("hf-hub:", "local-dir:")):
        raise PandError(
            f"unknown open_clip architecture promptkd.student_arch='{arch}'. "
            f"Available e.g.: {', '.join(a for a in open_clip.list_models() if a.startswith(('ViT-B', 'pand')))}"
        )
    tag_cfg = get_pretrained_cfg(arch, pretrained) if pretrained else {}
    create = functools.partial(open_clip.create_model, arch, pretrained_text=False)
    try:
        if pretrained and not tag_cfg and Path(pretrained).expanduser().is_file():
            # a local file: OpenAI-format weights (and files from a QuickGELU tag's Hugging Face repo) need QuickGELU,
            # TorchScript archives are refused unread; the one loader the teacher uses too
            model, _ = build_with_local_weights(arch, Path(pretrained).expanduser(), create,
                                                key="promptkd.student_pretrained", arch_key="promptkd.student_arch")
        else:
            # a tag builds with the activation its weights were trained with (QuickGELU for `openai`): open_clip
            # only warns when the architecture's config says otherwise
            model = create(pretrained=pretrained, force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
    except RuntimeError as e:
        raise PandError(
            f"could not load the student '{arch}' weights '{pretrained}' ({e}). Offline? Point "
            f"promptkd.student_pretrained at a local checkpoint file, or set it to null for random init."
        ) from e
    pp = dict(open_clip.get_model_preprocess_cfg(model))
    scale = float(model.logit_scale.detach().exp())
    visual = model.visual
    del model
    return visual, scale, pp


def student_preprocess(open_clip_pp: Dict[str, Any]) -> PreprocessSpec:
    """The student's eval preprocessing as a :class:`pand_runtime.preprocess_spec.PreprocessSpec`.

    Taken from the student's open_clip preprocess config (its pretraining's mean/std and interpolation) by
    :func:`pand.models.clip_preprocess.open_clip_preprocess_spec`, the teacher's rule. As in PromptKD's test
    transform, the shorter side is resized to the input size and center-cropped (``resize_size = image_size``,
    ``resize_mode="shorter_side"`` also where open_clip would squash). Train uses
    ``create_transform(pp, True, "standard", crop_scale)``: RandomResizedCrop + horizontal flip, the reference's
    ``random_resized_crop`` + ``random_flip``.

    Raises:
        PandError: a non-square input size (or a resize mode open_clip letterboxes with).
    """
    return dataclasses.replace(open_clip_preprocess_spec(open_clip_pp), resize_mode="shorter_side")


def teacher_embed_dim(teacher_cfg: TeacherCfg) -> int:
    """``D_t`` of ``teacher.arch`` from its open_clip architecture config (no weights are loaded)."""
    register_model_configs()
    mc = open_clip.get_model_config(str(teacher_cfg.arch))
    if mc is None:
        raise PandError(f"unknown open_clip teacher architecture teacher.arch='{teacher_cfg.arch}'")
    return int(mc["embed_dim"])


def build_promptkd_student(pk_cfg: PromptKDCfg, embed_dim: int, pretrained: bool = True
                           ) -> Tuple[PromptKDStudent, PreprocessSpec]:
    """Build the trainable student from the ``promptkd`` section.

    Args:
        pk_cfg: the ``promptkd`` section (``student_arch``, ``student_pretrained``, ``n_ctx_vision``,
            ``prompt_depth``, ``train_layernorm``, ``logit_scale``).
        embed_dim: ``D_t`` (class-vector dimension).
        pretrained: load ``promptkd.student_pretrained`` (False: random init, e.g. before loading a state dict).

    Returns:
        ``(student, preprocess)``: parameters frozen except prompts, projector (and LayerNorms if asked); the
        student's eval preprocessing (:func:`student_preprocess`).
    """
    visual, own_scale, pp = create_student_visual(str(pk_cfg.student_arch),
                                                  pk_cfg.student_pretrained if pretrained else None)
    encoder = PromptedVisionEncoder(visual, int(pk_cfg.n_ctx_vision), int(pk_cfg.prompt_depth))
    scale = float(pk_cfg.logit_scale) if pk_cfg.logit_scale is not None else own_scale
    student = PromptKDStudent(encoder, embed_dim, scale)
    set_trainable(student, bool(pk_cfg.train_layernorm))
    return student, student_preprocess(pp)


def set_trainable(student: PromptKDStudent, train_layernorm: bool = False) -> None:
    """Freeze everything but the prompts and the projector (and the encoder LayerNorms when asked)."""
    for p in student.parameters():
        p.requires_grad_(False)
    student.encoder.prompts.requires_grad_(True)
    for p in student.projector.parameters():
        p.requires_grad_(True)
    if train_layernorm:
        for m in student.encoder.visual.modules():
            if isinstance(m, nn.LayerNorm):
                for p in m.parameters():
                    p.requires_grad_(True)


def trainable_parameters(model: nn.Module) -> Iterator[Tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every parameter with ``requires_grad``."""
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


def build_promptkd_classifier(pk_cfg: PromptKDCfg, teacher_cfg: TeacherCfg, num_classes: int,
                              embed_dim: Optional[int] = None) -> PromptKDClassifier:
    """Rebuild the deployable PromptKD classifier skeleton (random weights) for ``load_state_dict``.

    This is the factory the exporter calls for ``student.safetensors`` files whose metadata says
    ``kind: "promptkd"``: build with the run's settings, then load the file's tensors (encoder, prompts,
    projector, ``class_vectors``, ``logit_scale``) with ``strict=True``. No weights are downloaded.

    Args:
        pk_cfg: the ``promptkd`` section.
        teacher_cfg: the ``teacher`` section (only ``arch``, read when ``embed_dim`` is None).
        num_classes: ``C``, rows of the class-vector buffer.
        embed_dim: ``D_t``; default: the teacher architecture's ``embed_dim``.

    Returns:
        A :class:`PromptKDClassifier` in eval mode.
    """
    d = int(embed_dim) if embed_dim is not None else teacher_embed_dim(teacher_cfg)
    student, _ = build_promptkd_student(pk_cfg, d, pretrained=False)
    return PromptKDClassifier(student, torch.zeros(int(num_classes), d)).eval()


def classifier_metadata(pk_cfg: PromptKDCfg, teacher_cfg: TeacherCfg, clf: PromptKDClassifier, pp: PreprocessSpec,
                        class_names: List[str], extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Metadata stored with ``student.safetensors``: enough to rebuild (:func:`load_promptkd_classifier`) and to
    preprocess (``preprocess`` = :meth:`pand_runtime.preprocess_spec.PreprocessSpec.to_dict`) without the run config.

    The keys shared with the other recipes' students (``arch``, ``num_classes``, ``class_names``, ``image_size``,
    ``preprocess``, ``recipe``) mean the same; ``kind: "promptkd"`` tells an exporter to rebuild with
    :func:`build_promptkd_classifier` (or :func:`load_promptkd_classifier`) instead of the student registry.
    """
    return {
        "kind": "promptkd",
        "pand_version": __version__,
        "arch": str(pk_cfg.student_arch),
        "num_classes": clf.num_classes,
        "embed_dim": clf.embed_dim,
        "class_names": list(class_names),
        "recipe": "promptkd",
        "image_size": pp.image_size,
        "preprocess": pp.to_dict(),
        "input_shape": [1, 3, pp.image_size, pp.image_size],
        "output": "logits",
        "promptkd": {
            "student_arch": str(pk_cfg.student_arch),
            "n_ctx_vision": int(pk_cfg.n_ctx_vision),
            "prompt_depth": int(pk_cfg.prompt_depth),
            "train_layernorm": bool(pk_cfg.train_layernorm),
            "logit_scale": float(clf.student.logit_scale),
        },
        "teacher_arch": str(teacher_cfg.arch),
        **(extra or {}),
    }


def load_promptkd_classifier(path, device: str = "cpu") -> Tuple[PromptKDClassifier, Dict[str, Any]]:
    """Rebuild a :class:`PromptKDClassifier` from a ``student.safetensors`` written by the PromptKD recipe.

    Uses only the file (its metadata names the architecture and prompt settings); strict state-dict load.

    Returns:
        ``(classifier in eval mode, metadata)``.
    """
    tensors, meta = load_tensors(path, device=device)
    if meta.get("kind") != "promptkd":
        raise ArtifactError(f"{path} is not a PromptKD student (metadata kind={meta.get('kind')!r})")
    pk = meta["promptkd"]
    clf = build_promptkd_classifier(OmegaConf.create({**pk, "student_pretrained": None}),
                                    OmegaConf.create({"arch": meta.get("teacher_arch")}), int(meta["num_classes"]),
                                    embed_dim=int(meta["embed_dim"]))
    try:
        clf.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{path} does not fit the PromptKD classifier it describes: {e}") from e
    return clf.to(device).eval(), meta


def save_promptkd_classifier(path: str | Path, pk_cfg: PromptKDCfg, teacher_cfg: TeacherCfg, student: PromptKDStudent,
                             class_vectors: torch.Tensor, pp: PreprocessSpec, class_names: List[str],
                             extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write the deployable classifier (``student`` over ``class_vectors [C, D_t]``, all classes) to ``path``
    (``student.safetensors``) with :func:`classifier_metadata`, atomically; :func:`load_promptkd_classifier` reads
    it back."""
    clf = PromptKDClassifier(student, class_vectors.cpu()).eval()
    save_tensors(path, clf.state_dict(), classifier_metadata(pk_cfg, teacher_cfg, clf, pp, list(class_names), extra))
    return Path(path)
