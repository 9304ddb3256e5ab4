"""PromptKD's teacher as the reference trains it: PromptSRC prompts on the frozen open_clip teacher.

PromptSRC (Khattak et al., ICCV 2023) learns independent deep prompts in both towers of a frozen CLIP and keeps
them close to the frozen model ("self-regulation"). Here, with ``n_t``/``n_v`` prompt tokens and depths
``d_t``/``d_v`` (``promptkd.promptsrc.*``):

* **language**: the prompt of class ``c`` is ``[SOS] ctx_1..ctx_{n_t} <c>. [EOS]`` (the CoOp form of
  :class:`pand.psc.prompt_learner.PromptLearner`, ``ctx`` initialised from the word embeddings of
  ``ctx_init = "a photo of a"``); at text layers ``i = 1 .. d_t-1`` the tokens at positions ``1..n_t`` are
  **replaced** by fresh learnable ``Q_i [n_t, W_t]`` (:class:`DeepPromptTextEncoder`);
* **vision**: the deep visual prompts of :class:`pand.promptkd.student.PromptedVisionEncoder` on the teacher's own
  image tower (``n_v`` tokens appended at the input, replaced at layers ``1 .. d_v-1``);
* every CLIP weight stays frozen; only ``ctx``, ``Q`` and the vision prompts train, on the **base classes'**
  labelled training images (labels relabelled ``0..m-1``).

Loss of a batch (:func:`promptsrc_losses`), with ``n(.)`` = L2 normalisation, ``s`` the teacher's logit scale,
prompted features ``f = n(E_v(x))``, ``g = n(E_t(prompts))`` and frozen ones ``f0 = n(E_v^0(x))``,
``g0 = n(mean_k n(E_t^0(template_k(c))))``:

* ``ce = CE(s f g^T, y)``;
* ``scl_text = w_text * mean |g - g0|`` and ``scl_image = w_image * mean |f - f0|`` (element means, L1);
* ``scl_logits = sum KL(softmax(s f0 g0^T) || softmax(s f g^T)) / (B * m)`` (sum over the batch and classes
  divided by the number of logits, as the reference; temperature 1);
* ``total = ce + scl_text + scl_image + scl_logits`` (weights 25 / 10 in the reference).

Gaussian prompt aggregation (:func:`gpa_weights`): after epoch ``e = 1..E`` the prompts ``P_e`` are added with
weight ``w_e = N(e; mu, sigma) / sum_k N(k; mu, sigma)`` (mu 15, sigma 1 for E = 20 in the reference); the teacher
keeps ``sum_e w_e P_e``. The weights are computed as a softmax of the log densities, so a ``mu`` far outside
``1..E`` still gives finite weights (all of them on the nearest epoch).

The aggregated prompts give (i) the pre-stored class vectors ``T = g`` of **all** classes (the learned text
prompts re-applied to every class name, novel ones included) and (ii) the teacher image features used for
distillation and evaluation (:class:`PromptedTeacher`). They are saved once per run as
``promptkd/promptsrc_teacher.safetensors`` (``text_ctx``, ``text_deep``, ``vision``) with their settings.

Not reproduced: the reference samples 16 shots per base class (here every base-class training image is used;
``data.labels_per_class`` limits them), ensembles 60 ImageNet templates for ``g0`` (here
``promptkd.promptsrc.zs_templates``, default the dataset template), and trains in fp16.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pand.data.transforms import create_transform
from pand.engine.checkpoint import split_prefixed
from pand.engine.lifecycle import AUTO, RunLifecycle, all_skipped
from pand.engine.loaders import make_train_loader
from pand.engine.loop import train_one_epoch
from pand.engine.optim import build_optimizer, set_lr
from pand.engine.step import optimizer_step
from pand.errors import ArtifactError, PandError
from pand.models.teacher import same_teacher
from pand.utils.digest import tensor_sha256
from pand.psc.prompt_learner import PromptLearner, TextEncoder
from pand.utils.distributed import DistInfo
from pand.utils.io import load_tensors

from .data import base_only_splits
from .protocol import promptkd_lr
from .student import PromptedVisionEncoder

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PromptSRCCfg, TrainerCfg

__all__ = [
    "PROMPTSRC_ARTIFACT", "REFERENCE_DEPTH", "gpa_weights", "promptsrc_losses", "DeepPromptTextEncoder",
    "PromptSRCModel", "PromptedTeacher", "zero_shot_text_features", "train_promptsrc_teacher",
    "promptsrc_text_features", "load_promptsrc_artifact", "prompted_teacher", "prompts_sha",
]

PROMPTSRC_ARTIFACT = "promptsrc_teacher.safetensors"
REFERENCE_DEPTH = 9  # the reference's IVLP depth (vision and language) for its ViT-L/14 teacher


# --------------------------------------------------------------------------------------------------------------
# pure math
# --------------------------------------------------------------------------------------------------------------
def gpa_weights(epochs: int, mean: float, std: float) -> List[float]:
    """Normalised Gaussian weights ``w_e`` of epochs ``e = 1..epochs`` (sum 1).

    Raises:
        PandError: ``epochs < 1`` or ``std <= 0``.
    """
    if epochs < 1 or std <= 0:
        raise PandError(f"Gaussian prompt aggregation needs epochs >= 1 and gpa_std > 0 (got {epochs}, {std})")
    logd = torch.tensor([-((e - float(mean)) ** 2) / (2.0 * float(std) ** 2) for e in range(1, epochs + 1)],
                        dtype=torch.float64)
    return [float(w) for w in torch.softmax(logd, dim=0)]


def promptsrc_losses(logits: torch.Tensor, labels: torch.Tensor, image_features: torch.Tensor,
                     zs_image_features: torch.Tensor, text_features: torch.Tensor, zs_text_features: torch.Tensor,
                     zs_logits: torch.Tensor, text_weight: float = 25.0, image_weight: float = 10.0
                     ) -> Dict[str, torch.Tensor]:
    """PromptSRC's loss terms for one batch (see the module docstring); the frozen side carries no gradient.

    Args:
        logits: ``[B, m]`` prompted logits ``s f g^T``.
        labels: ``[B]`` class ids in ``0..m-1``.
        image_features, zs_image_features: ``[B, D]`` normalised prompted / frozen image features.
        text_features, zs_text_features: ``[m, D]`` normalised prompted / frozen text features.
        zs_logits: ``[B, m]`` frozen logits ``s f0 g0^T``.
        text_weight, image_weight: weights of the two L1 terms.

    Returns:
        ``{"ce", "scl_text", "scl_image", "scl_logits", "total"}`` scalars.
    """
    if logits.shape != zs_logits.shape or logits.ndim != 2:
        raise ValueError(f"promptsrc_losses needs [B, m] logits of equal shape, got {tuple(logits.shape)} and "
                         f"{tuple(zs_logits.shape)}")
    ce = F.cross_entropy(logits, labels)
    scl_text = F.l1_loss(text_features, zs_text_features.detach().to(text_features.dtype)) * text_weight
    scl_image = F.l1_loss(image_features, zs_image_features.detach().to(image_features.dtype)) * image_weight
    scl_logits = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits.detach().to(logits.dtype), dim=1),
                          reduction="sum", log_target=True) / logits.numel()
    return {"ce": ce, "scl_text": scl_text, "scl_image": scl_image, "scl_logits": scl_logits,
            "total": ce + scl_text + scl_image + scl_logits}


# --------------------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------------------
def _resolve_depth(depth: Optional[int], layers: int, what: str) -> int:
    if depth is None:
        return min(REFERENCE_DEPTH, layers)
    if not 0 <= int(depth) <= layers:
        raise PandError(f"promptkd.promptsrc.prompt_depth_{what}={depth} does not fit the teacher's {layers}-layer "
                        f"{what} tower; use 0..{layers} (null = min(9, layers))")
    return int(depth)


class DeepPromptTextEncoder(nn.Module):
    """The frozen open_clip text path on prompt embeddings, with deep language prompts.

    ``forward(prompts [C, L, W], tokenized [C, L]) -> [C, D]`` L2-normalised. At layers ``1 .. depth-1`` the
    tokens at positions ``1 .. n_ctx`` of the layer input are replaced by ``deep[i-1] [n_ctx, W]``. ``depth <= 1``
    is the plain text tower. The input, causal mask and pooling are those of
    :class:`pand.psc.prompt_learner.TextEncoder` (``eot_index``, ``embed``, ``pool``); only the block loop is here.
    """

    def __init__(self, clip_model: nn.Module, n_ctx: int, depth: int, init_std: float = 0.02,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        self.base = TextEncoder(clip_model)
        layers = len(self.base.transformer.resblocks)
        self.n_ctx, self.depth = int(n_ctx), _resolve_depth(depth, layers, "text")
        width = int(self.base.positional_embedding.shape[1])
        deep = torch.empty(max(self.depth - 1, 0), self.n_ctx, width).normal_(0.0, init_std, generator=generator)
        self.deep = nn.Parameter(deep.to(self.base.positional_embedding.device))

    def train(self, mode: bool = True) -> "DeepPromptTextEncoder":
        self.training = mode
        self.base.train(False)
        return self

    def forward(self, prompts: torch.Tensor, tokenized: torch.Tensor) -> torch.Tensor:
        b = self.base
        idx = b.eot_index(tokenized)
        x, mask = b.embed(prompts, idx)
        batch_first = bool(getattr(b.transformer, "batch_first", False))
        if not batch_first:
            x = x.transpose(0, 1)  # NLD -> LND
        n = self.n_ctx
        for i, block in enumerate(b.transformer.resblocks):
            if 1 <= i < self.depth:
                q = self.deep[i - 1].to(x.dtype)
                if batch_first:
                    q = q.unsqueeze(0).expand(x.shape[0], -1, -1)
                    x = torch.cat([x[:, :1], q, x[:, 1 + n:]], dim=1)
                else:
                    q = q.unsqueeze(1).expand(-1, x.shape[1], -1)
                    x = torch.cat([x[:1], q, x[1 + n:]], dim=0)
            x = block(x, attn_mask=mask)
        if not batch_first:
            x = x.transpose(0, 1)
        return b.pool(x, idx)


class PromptSRCModel(nn.Module):
    """Deep vision + language prompts on a frozen :class:`pand.models.teacher.Teacher` for ``class_names``.

    Only ``prompt_learner.ctx``, ``text_encoder.deep`` and ``image_encoder.prompts`` require grad
    (:meth:`prompt_state`); the CLIP weights are the teacher's own (shared, frozen).
    """

    def __init__(self, teacher: Any, class_names: Sequence[str], settings: Dict[str, Any], seed: int = 0):
        super().__init__()
        n_t, init = int(settings["n_ctx_text"]), settings.get("ctx_init")
        gen = torch.Generator().manual_seed(int(seed))
        self.prompt_learner = PromptLearner(teacher.model, teacher.tokenizer, list(class_names), n_ctx=n_t,
                                            ctx_init=init, prompt_form="coop", generator=gen,
                                            settings=("promptkd.promptsrc.n_ctx_text", "promptkd.promptsrc.ctx_init"))
        self.text_encoder = DeepPromptTextEncoder(teacher.model, n_t, settings.get("prompt_depth_text"),
                                                  generator=gen)
        visual = teacher.model.visual
        layers = len(getattr(getattr(visual, "transformer", None), "resblocks", []))
        depth_v = _resolve_depth(settings.get("prompt_depth_vision"), layers, "vision")
        if layers == 0:  # a CNN image tower (open_clip ModifiedResNet): nothing to prompt, only the text tower learns
            self.image_encoder = UnpromptedVisionEncoder(visual)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) + 1)
                self.image_encoder = PromptedVisionEncoder(visual, int(settings["n_ctx_vision"]), depth_v)
        self.image_encoder.to(teacher.device)
        for name, p in self.named_parameters():
            p.requires_grad_(name in ("prompt_learner.ctx", "text_encoder.deep", "image_encoder.prompts"))
        self.logit_scale = float(teacher.logit_scale)
        self.settings = {**settings, "prompt_depth_text": self.text_encoder.depth,
                         "prompt_depth_vision": self.image_encoder.depth}

    def train(self, mode: bool = True) -> "PromptSRCModel":
        self.training = mode
        self.text_encoder.train(mode)
        self.image_encoder.train(mode)
        return self

    def text_features(self) -> torch.Tensor:
        """``g [C, D]`` normalised."""
        return self.text_encoder(self.prompt_learner(), self.prompt_learner.tokenized_prompts)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """``f [B, D]`` normalised."""
        return F.normalize(self.image_encoder(x).float(), dim=-1)

    def prompt_state(self) -> Dict[str, torch.Tensor]:
        return {"text_ctx": self.prompt_learner.ctx.detach().clone(), "text_deep": self.text_encoder.deep.detach()
                .clone(), "vision": self.image_encoder.prompts.detach().clone()}

    def load_prompt_state(self, state: Dict[str, torch.Tensor]) -> None:
        targets = {"text_ctx": self.prompt_learner.ctx, "text_deep": self.text_encoder.deep,
                   "vision": self.image_encoder.prompts}
        for k, p in targets.items():
            if k not in state or tuple(state[k].shape) != tuple(p.shape):
                raise ArtifactError(f"PromptSRC prompt tensor '{k}' has shape "
                                    f"{tuple(state[k].shape) if k in state else None}, this teacher needs "
                                    f"{tuple(p.shape)} (other prompt settings or another teacher)")
            with torch.no_grad():
                p.copy_(state[k].to(p.device, p.dtype))


class PromptedTeacher:
    """The teacher seen through its trained PromptSRC vision prompts.

    Behaves like the wrapped :class:`pand.models.teacher.Teacher` (every other attribute is the teacher's) except
    :meth:`encode_image`, which runs the prompted image tower. ``identity`` stays the frozen teacher's (caches and
    artifacts are keyed on the weights); ``prompts_sha`` names the prompts.
    """

    def __init__(self, teacher: Any, image_encoder: nn.Module, prompts_sha: str):
        self._teacher = teacher
        self.image_encoder = image_encoder.eval()
        self.prompts_sha = prompts_sha

    def __getattr__(self, name: str) -> Any:
        return getattr(self._teacher, name)

    @torch.no_grad()
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D_t]`` normalised prompted image features (fp32, on the teacher's device)."""
        self.image_encoder.eval()
        x = x.to(self._teacher.device, non_blocking=True)
        with self._teacher.autocast():
            f = self.image_encoder(x)
        return F.normalize(f.float(), dim=-1)


# --------------------------------------------------------------------------------------------------------------
# training and artifacts
# --------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def zero_shot_text_features(teacher: Any, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """``g0 [C, D]``: the frozen teacher's text features, the normalised mean over ``templates`` (each with ``{}``)."""
    if not templates or any("{}" not in t for t in templates):
        raise PandError(f"promptkd.promptsrc.zs_templates must be templates with '{{}}', got {list(templates)}")
    feats = torch.stack([teacher.encode_text([t.format(n) for n in class_names]).float() for t in templates])
    return F.normalize(feats.mean(dim=0), dim=-1)


def prompts_sha(state: Dict[str, torch.Tensor]) -> str:
    """16 hex digits of the sha256 of the prompt tensors' fp32 bytes, in key order (names a set of prompts)."""
    return tensor_sha256(*(state[k].detach().float() for k in sorted(state)))[:16]


def _teacher_train_transform(teacher: Any):
    """The teacher's training augmentation: RandomResizedCrop (scale 0.08-1) + flip at its own size, interpolation
    and normalisation (``teacher.preprocess_spec``)."""
    return create_transform(teacher.preprocess_spec, True, "standard", crop_scale=(0.08, 1.0))


def _settings(ps: PromptSRCCfg) -> Dict[str, Any]:
    """The prompt settings of :class:`PromptSRCModel` from the ``promptkd.promptsrc`` section."""
    return {"n_ctx_text": int(ps.n_ctx_text), "n_ctx_vision": int(ps.n_ctx_vision),
            "prompt_depth_text": ps.prompt_depth_text, "prompt_depth_vision": ps.prompt_depth_vision,
            "ctx_init": ps.ctx_init or None}


def _plain(section: Any) -> Dict[str, Any]:
    """A config section as a plain dict (OmegaConf or a dataclass)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(vars(section))


def _aggregate(total: Optional[Dict[str, torch.Tensor]], state: Dict[str, torch.Tensor], weight: float
               ) -> Dict[str, torch.Tensor]:
    """Gaussian prompt aggregation, one epoch at a time: ``total + w_e * P_e`` (float64; ``P_e`` alone at first)."""
    if total is None:
        return {k: weight * v.double() for k, v in state.items()}
    return {k: total[k] + weight * v.double() for k, v in state.items()}


#: what a user can do about a non-finite PromptSRC loss
NONFINITE_FIX = "Lower promptkd.promptsrc.lr or use teacher.precision=fp32"


def train_promptsrc_teacher(ps_cfg: PromptSRCCfg, trainer_cfg: TrainerCfg, splits: Any, teacher: Any,
                            base_classes: Sequence[int], progress: bool = True, checkpoints: Optional[Path] = None
                            ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Train PromptSRC prompts on the base classes' labelled training images; return the GPA-aggregated prompts.

    Runs on the training scaffold (:mod:`pand.engine`): SGD from :func:`pand.engine.optim.build_optimizer`, the LR
    of :func:`pand.promptkd.protocol.promptkd_lr` written per epoch with :func:`pand.engine.optim.set_lr`, one
    :func:`pand.engine.step.optimizer_step` per batch (fp32 master prompts, no clipping, the teacher's autocast on
    CUDA) and :func:`pand.engine.loop.train_one_epoch` summing the loss terms; the run lifecycle
    (:mod:`pand.engine.lifecycle`) applies ``trainer.skip_nonfinite_steps`` and, with ``checkpoints``, writes a
    checkpoint per epoch (prompts, GPA sum, optimiser, RNG, history) that an interrupted call with the same settings
    continues (``resume=auto``).

    Args:
        ps_cfg: the ``promptkd.promptsrc`` section.
        trainer_cfg: the ``trainer`` section (``seed``, loader workers, ``skip_nonfinite_steps``).
        splits: the run's splits (only ``train`` images of ``base_classes`` are read, with their labels).
        teacher: the frozen :class:`pand.models.teacher.Teacher`.
        base_classes: base class ids.
        checkpoints: the checkpoint directory (None: no checkpoints, always from the first epoch).

    Returns:
        ``(prompt state {text_ctx, text_deep, vision}, metadata)`` (settings, history, GPA weights).

    Raises:
        NonFiniteLossError: a non-finite loss (unless ``trainer.skip_nonfinite_steps``).
        PandError: prompt settings that do not fit the teacher.
        DataError: fewer than 2 base-class training images.
    """
    ps = ps_cfg
    seed = int(trainer_cfg.seed)
    base_splits = base_only_splits(splits, base_classes)
    names = list(base_splits.class_names)
    templates = list(ps.zs_templates) or [str(splits.template)]
    model = PromptSRCModel(teacher, names, _settings(ps), seed=seed)
    g0 = zero_shot_text_features(teacher, names, templates).to(teacher.device)
    train = base_splits.train.with_transform(_teacher_train_transform(teacher))
    loader = make_train_loader(train, int(ps.batch_size), seed, DistInfo(), trainer_cfg, teacher.device.type)
    optimizer = build_optimizer(model.parameters(), "sgd", ps.lr, weight_decay=ps.weight_decay, momentum=ps.momentum)
    epochs = int(ps.epochs)
    weights = gpa_weights(epochs, float(ps.gpa_mean), float(ps.gpa_std))
    s = model.logit_scale
    config = {"promptsrc": _plain(ps), "teacher": str(teacher.identity), "seed": seed, "base_class_names": names,
              "templates": templates}
    life = RunLifecycle("the PromptSRC teacher", bool(trainer_cfg.skip_nonfinite_steps), checkpoints, config, AUTO,
                        {"optimizer": optimizer}, NONFINITE_FIX)
    aggregated: Optional[Dict[str, torch.Tensor]] = None
    history: List[Dict[str, Any]] = []
    ck = life.open()
    if ck is not None:  # an interrupted call with these settings
        model.load_prompt_state(split_prefixed(ck.tensors, "prompts"))
        aggregated = split_prefixed(ck.tensors, "gpa")
        life.restore(ck)
        history = list(ck.state["history"])

    def step(epoch: int, i: int, batch: Any) -> Optional[Tuple[Dict[str, float], int]]:
        images, labels, _ = batch
        images, labels = images.to(teacher.device), torch.as_tensor(labels).to(teacher.device)
        with torch.no_grad():
            f0 = teacher.encode_image(images)
        with teacher.autocast():
            f = model.image_features(images)
            g = model.text_features()
        logits = s * f @ g.T
        terms = promptsrc_losses(logits, labels, f, f0, g, g0, s * f0 @ g0.T, float(ps.text_loss_weight),
                                 float(ps.image_loss_weight))
        values = torch.stack([v.detach().float() for v in terms.values()])
        if not life.finite(values, optimizer, epoch, i, lambda: f"terms: {dict(zip(terms, values.tolist()))}"):
            return None
        optimizer_step(terms["total"], optimizer)
        return {k: float(v.detach()) for k, v in terms.items()}, int(images.shape[0])

    t0 = time.time()
    for epoch in range(life.start, epochs):
        lr = set_lr(optimizer, promptkd_lr(epoch, float(ps.lr), epochs, int(ps.warmup_epochs), float(ps.warmup_lr)))
        loader.sampler.set_epoch(epoch, epoch)
        model.train()
        bar = tqdm(loader, desc=f"promptsrc teacher {epoch + 1}/{epochs}", disable=not progress, leave=False)
        totals = train_one_epoch(bar, lambda i, batch: step(epoch, i, batch))
        if totals.steps == 0 and totals.skipped:
            raise all_skipped(life.stage, epoch, totals.skipped, NONFINITE_FIX)
        w = weights[epoch]
        state = model.prompt_state()
        aggregated = _aggregate(aggregated, state, w)
        history.append({"epoch": epoch, "lr": lr, "steps": totals.steps, "skipped_steps": totals.skipped,
                        "gpa_weight": w, **totals.means()})
        life.best.take(epoch)  # no selection: GPA aggregates every epoch
        life.save(epoch, {**{f"prompts.{k}": v for k, v in state.items()},
                          **{f"gpa.{k}": v for k, v in aggregated.items()}}, history=history)
    assert aggregated is not None
    prompts = {k: v.float().cpu() for k, v in aggregated.items()}
    meta = {"kind": "promptsrc_teacher", "teacher_identity": teacher.identity, "settings": model.settings,
            "zs_templates": templates, "trained_on": "base classes only (labelled training images)",
            "base_class_names": names, "epochs": epochs, "gpa": {"mean": float(ps.gpa_mean), "std": float(ps.gpa_std),
                                                                 "weights": weights},
            "loss_weights": {"text": float(ps.text_loss_weight), "image": float(ps.image_loss_weight)},
            "history": history, "seconds": time.time() - t0, "prompts_sha": prompts_sha(prompts)}
    return prompts, meta


def load_promptsrc_artifact(path: str | Path, teacher: Any) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a ``promptsrc_teacher.safetensors``; refuse one made for another teacher.

    Raises:
        ArtifactError: unreadable file, not a PromptSRC artifact, another teacher.
    """
    try:
        tensors, meta = load_tensors(Path(path))
    except Exception as e:  # noqa: BLE001 - missing / corrupt file
        raise ArtifactError(f"cannot read the PromptSRC teacher {path} ({type(e).__name__}: {e})") from e
    if meta.get("kind") != "promptsrc_teacher" or set(tensors) != {"text_ctx", "text_deep", "vision"}:
        raise ArtifactError(f"{path} is not a PromptSRC teacher artifact (kind={meta.get('kind')!r})")
    if not same_teacher(str(meta.get("teacher_identity")), str(teacher.identity)):
        raise ArtifactError(f"{path} holds prompts of teacher {meta.get('teacher_identity')}, not of this run's "
                            f"{teacher.identity}; train them again (promptkd.promptsrc.artifact=null)")
    return tensors, meta


@torch.no_grad()
def promptsrc_text_features(teacher: Any, prompts: Dict[str, torch.Tensor], meta: Dict[str, Any],
                            class_names: Sequence[str]) -> torch.Tensor:
    """The learned text prompts re-applied to ``class_names``: ``[C, D]`` normalised on the CPU."""
    model = PromptSRCModel(teacher, class_names, meta["settings"])
    model.load_prompt_state(prompts)
    model.eval()
    with teacher.autocast():
        return model.text_features().float().cpu()


class UnpromptedVisionEncoder(nn.Module):
    """A frozen image tower without prompts, for teachers whose image tower is a CNN (open_clip ``ModifiedResNet``):
    PromptSRC then prompts only the text tower and its image-side consistency term is zero by construction.
    ``prompts`` is an empty ``[0, 0, 0]`` tensor so that stored artifacts keep one format."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual.eval()
        self.n_ctx, self.depth = 0, 0
        self.prompts = nn.Parameter(torch.zeros(0, 0, 0), requires_grad=False)

    def train(self, mode: bool = True) -> "UnpromptedVisionEncoder":
        super().train(mode)
        self.visual.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def prompted_teacher(teacher: Any, prompts: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> PromptedTeacher:
    """A :class:`PromptedTeacher` whose image tower carries the stored vision prompts."""
    s = meta["settings"]
    if not hasattr(teacher.model.visual, "transformer"):  # CNN image tower: trained without vision prompts
        enc = UnpromptedVisionEncoder(teacher.model.visual)
    else:
        with torch.random.fork_rng(devices=[]):  # the init is overwritten; keep the caller's RNG stream unchanged
            enc = PromptedVisionEncoder(teacher.model.visual, int(s["n_ctx_vision"]), int(s["prompt_depth_vision"]))
    if tuple(enc.prompts.shape) != tuple(prompts["vision"].shape):
        raise ArtifactError(f"stored vision prompts {tuple(prompts['vision'].shape)} do not fit the teacher's image "
                            f"tower {tuple(enc.prompts.shape)}")
    with torch.no_grad():
        enc.prompts.copy_(prompts["vision"])
    enc.requires_grad_(False)
    return PromptedTeacher(teacher, enc.to(teacher.device), str(meta.get("prompts_sha") or prompts_sha(prompts)))
