"""Contrastive pre-training of the demo's open_clip teacher on the synthetic benchmark's *web pool*.

The papers' regime is a teacher that knows far more than a student can learn from its few labels: a CLIP model
pre-trained on web-scale image-text pairs that include the target species. The demo builds that regime without a
download: a small open_clip model (``pand-demo-rn``, a small ModifiedResNet) is trained CLIP-style on the web pool of
:mod:`pand.data.synthetic` -- captioned images of **all** classes, rendered from their own random streams and so
disjoint from the student's train, validation and test images, with varied captions (synonyms, attribute order,
partial descriptions). It never sees a class label; the class names only appear as words in some captions.

Loss (InfoNCE as CLIP, with the model's learnable ``logit_scale`` ``s = exp(.) <= 100``), soft targets::

    P[i, j] = 1 if caption j is true of image i's class (``caption_fits``), else 0
    L = ( H(P / rowsum(P), softmax(s I T^T)) + H(P^T / rowsum(P^T), softmax(s T I^T)) ) / 2

with ``I, T [B, D]`` the L2-normalised image and caption embeddings and ``H`` the cross-entropy averaged over rows:
a partial caption ("a red bird") is a positive of every red bird in the batch, not a negative.

Plus a *caption-tag* loss: the attribute words a caption mentions (its ``mentions``, e.g. ``beak_shape: hooked``)
are targets of a linear head per attribute, shared by the image and the caption embedding (cross-entropy over that
attribute's values, only where the caption mentions it; mean of the image and text terms; the heads are thrown
away afterwards). Measured on validation: with the
contrastive loss alone the model learns colour and wing pattern (100%) but never the beak (chance, 50%; its image
features do not separate the beaks: a linear probe is at chance), because neither tower tells twins apart at the
start, so neither gets a gradient to start doing it. Tag supervision from captions is how tag-based web-scale
pre-training breaks that tie, and the information still comes only from the web pool's captions.

Training stops when the zero-shot top-1 on the *validation* split (class-name prompts) has not improved for
``patience`` evaluations, or at ``max_steps``; the best validation state is kept. The checkpoint is cached under
``<cache_dir>/demo_teacher/<hash>/`` (safetensors + ``meta.json`` with the validation curve), the hash covering the
architecture, the web pool, the validation images, the schedule and the seed. The run itself is the scaffold's run
lifecycle (:mod:`pand.engine.lifecycle`): a checkpoint per evaluation period under ``<hash>/checkpoints/`` (model,
tag heads, optimiser, RNG and batch-sampler states, the curve), continued by an interrupted call and removed once the
result is written; ``trainer.skip_nonfinite_steps`` honoured; the best validation evaluation kept.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

import pand.models.teacher  # noqa: F401  registers pand's open_clip configs
from pand.data.transforms import normalize_u8_tensor
from pand.engine.checkpoint import split_prefixed
from pand.engine.lifecycle import AUTO, RunLifecycle, all_skipped
from pand.engine.loop import evaluate
from pand.engine.optim import build_optimizer, set_lr
from pand.engine.step import optimizer_step
from pand.errors import PandError
from pand.models.clip_preprocess import open_clip_preprocess_spec
from pand.utils.io import atomic_write_json, save_tensors
from pand_runtime.preprocess import crop_image
from pand_runtime.preprocess_spec import PreprocessSpec

__all__ = ["PretrainCfg", "pretrain_lr", "pretrain_teacher", "clip_contrastive_loss", "caption_tag_loss", "load_images_u8"]


@dataclass
class PretrainCfg:
    """Schedule of the web-pool pre-training (AdamW, linear warm-up then cosine to ``max_steps``).

    Validation zero-shot top-1 that chose the losses (demo benchmark, 1 CPU thread): a 3-layer ViT image tower,
    contrastive only, 40% after 1,500 steps; this ModifiedResNet, contrastive only, 52% after 1,200 steps (beak at
    chance); + twin hard negatives and a logit scale starting at 50, 50% after 600 steps (beak still at chance);
    + the caption-tag loss (weight 4 per attribute), 73% after 600 steps at lr 1e-3; these defaults (lr 2e-3,
    1,500 steps), 97.5% (best at step 1,300) in ``make demo``.
    """

    max_steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    eval_every: int = 100  # steps between validation zero-shot evaluations
    hard_fraction: float = 0.5  # share of each batch drawn from a class one attribute away from another image
    init_logit_scale: float = 50.0  # CLIP starts at 1/0.07 ~ 14; a sharper start lets the finest attribute matter
    tag_weight: float = 4.0  # weight of the caption-tag loss per attribute (0 = contrastive only)
    patience: int = 4  # evaluations without a better validation top-1 before stopping
    seed: int = 0


def pretrain_lr(step: int, pcfg: PretrainCfg) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up ``lr * (step + 1) / W`` for ``step < W = warmup_steps``,
    then ``lr * (1 + cos(pi * min(1, (step - W) / max(1, S - W)))) / 2`` with ``S = max_steps``."""
    if step < pcfg.warmup_steps:
        return pcfg.lr * (step + 1) / pcfg.warmup_steps
    t = (step - pcfg.warmup_steps) / max(1, pcfg.max_steps - pcfg.warmup_steps)
    return 0.5 * pcfg.lr * (1 + math.cos(math.pi * min(1.0, t)))


def clip_contrastive_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor,
                          positives: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Symmetric InfoNCE of ``img`` / ``txt`` ``[B, D]`` (L2-normalised) at scale ``exp(logit_scale)`` (<= 100).

    ``positives`` ``[B, B]`` (bool, optional): ``positives[i, j]`` when caption ``j`` is true of image ``i``; each
    row's (and column's) target is uniform over its positives. ``None`` = the diagonal (CLIP's hard targets).
    """
    s = logit_scale.exp().clamp(max=100.0)
    logits = s * img @ txt.t()
    if positives is None:
        target = torch.arange(img.shape[0], device=img.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    pos = positives.float()
    li = -((pos / pos.sum(1, keepdim=True)) * F.log_softmax(logits, 1)).sum(1).mean()
    lt = -((pos.t() / pos.t().sum(1, keepdim=True)) * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return (li + lt) / 2


def load_images_u8(paths: Sequence[str], pp: PreprocessSpec) -> torch.Tensor:
    """Decode ``paths`` once into a ``[N, 3, S, S]`` uint8 tensor: the resize and crop of ``pp`` (the model's
    eval preprocessing, :func:`pand_runtime.preprocess.crop_image`); normalised per batch by
    :func:`pand.data.transforms.normalize_u8_tensor`."""
    size = pp.image_size
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = crop_image(im.convert("RGB"), pp)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _cache_key(arch: str, web: Sequence[Any], val: Sequence[Tuple[str, int]], prompts: Sequence[str],
               pcfg: PretrainCfg) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"arch": arch, "prompts": list(prompts), "cfg": asdict(pcfg), "v": 2}).encode())
    for w in web:
        h.update(f"{Path(w.path).parent.name}/{Path(w.path).name}:{w.label}:{w.caption};".encode())
    for p, y in val:
        h.update(f"{Path(p).parent.name}/{Path(p).name}:{y};".encode())
    return h.hexdigest()[:16]


def _tag_heads(web: Sequence[Any], dim: int):
    """One linear head per mentioned attribute axis and the targets ``[N, A]`` (value index, -1 = not mentioned)."""
    axes = sorted({a for w in web for a in w.mentions})
    values = {a: sorted({str(w.mentions[a]) for w in web if a in w.mentions}) for a in axes}
    targets = torch.full((len(web), len(axes)), -1, dtype=torch.long)
    for i, w in enumerate(web):
        for j, a in enumerate(axes):
            if a in w.mentions:
                targets[i, j] = values[a].index(str(w.mentions[a]))
    heads = torch.nn.ModuleList(torch.nn.Linear(dim, len(values[a])) for a in axes)
    return heads, targets


def caption_tag_loss(heads, img: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over attribute axes of ``CE(head_a(img), target_a)`` on the rows whose caption mentions axis ``a``.

    ``img [B, D]`` image embeddings, ``targets [B, A]`` value indices (``-1`` = not mentioned, ignored)."""
    parts = [F.cross_entropy(h(img), targets[:, a], ignore_index=-1) for a, h in enumerate(heads)
             if bool((targets[:, a] >= 0).any())]
    return sum(parts) if parts else img.sum() * 0.0


def _batch_indices(n: int, pcfg: PretrainCfg, gen, labels, neighbours, by_class) -> torch.Tensor:
    """Random web-pool indices; with ``neighbours``, the last ``hard_fraction`` of the batch are images of a class
    one attribute away from the class of an earlier image of the batch."""
    if not neighbours or pcfg.hard_fraction <= 0:
        return torch.randperm(n, generator=gen)[: pcfg.batch_size]
    hard = int(round(pcfg.batch_size * pcfg.hard_fraction))
    idx = torch.randperm(n, generator=gen)[: pcfg.batch_size - hard]
    out = [idx]
    for i in range(hard):
        near = neighbours[int(labels[idx[i % len(idx)]])]
        c = near[int(torch.randint(len(near), (1,), generator=gen))]
        pool = by_class[c]
        out.append(pool[torch.randint(len(pool), (1,), generator=gen)])
    return torch.cat(out)


class _ZeroShotClassifier(nn.Module):
    """Zero-shot logits of uint8 images ``[B, 3, H, W]``: ``encode_image(normalise(x)) @ T^T [B, C]`` with the
    class text features ``T [C, D]`` fixed (L2-normalised image and text embeddings), normalised with ``pp``."""

    def __init__(self, model: nn.Module, text: torch.Tensor, pp: PreprocessSpec):
        super().__init__()
        self.model, self.text, self.pp = model, text, pp

    def forward(self, x_u8: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(normalize_u8_tensor(x_u8, self.pp), normalize=True) @ self.text.t()


def _zero_shot(model, tokens_cls, x_val, y_val, pp, batch: int = 256) -> float:
    """Zero-shot top-1 on the validation images (class-name prompts ``tokens_cls``), in batches of ``batch``;
    ``model`` is left in eval mode."""
    model.eval()
    with torch.no_grad():
        t = model.encode_text(tokens_cls, normalize=True)
    batches = [(x_val[i:i + batch], y_val[i:i + batch]) for i in range(0, len(x_val), batch)]
    return evaluate(_ZeroShotClassifier(model, t, pp).eval(), batches, x_val.device)["top1"]


def pretrain_teacher(
    arch: str,
    web: Sequence[Any],
    fits: Sequence[Sequence[bool]],
    val: Sequence[Tuple[str, int]],
    prompts: Sequence[str],
    cache_dir: str | Path,
    pcfg: Optional[PretrainCfg] = None,
    progress: bool = True,
    neighbours: Optional[Sequence[Sequence[int]]] = None,
    skip_nonfinite: bool = False,
) -> Path:
    """Train (or reuse) an open_clip model on the web pool; early-stopped on validation zero-shot top-1.

    Args:
        arch: open_clip model name (e.g. ``pand-demo-rn``; pand's configs are registered by
            :mod:`pand.models.teacher`).
        web: :class:`pand.data.synthetic.WebSample` items (``path``, ``label``, ``caption``, ``mentions``).
        fits: ``fits[j][c]`` is True when web caption ``j`` is true of class ``c`` (``caption_fits``).
        val: ``(path, label)`` validation images (the student's validation split), for early stopping.
        prompts: one prompt per class (the hand-crafted template applied to the class name).
        cache_dir: root of the cache.
        pcfg: schedule.
        neighbours: per class, the classes that differ from it in one attribute. When given, a
            ``hard_fraction`` of every batch is hard negatives: for an image already in the batch, an image of one
            of its class's neighbours (e.g. its twin with the other beak), so that the finest attribute decides
            some pairs of every batch.
        skip_nonfinite: ``trainer.skip_nonfinite_steps``: a step with a NaN/inf loss is skipped (and counted in the
            curve's ``skipped_steps``) instead of stopping with :class:`~pand.engine.lifecycle.NonFiniteLossError`.

    Returns:
        Path of the ``open_clip_model.safetensors`` checkpoint (loadable with ``teacher.pretrained=<path>``).
    """
    pcfg = pcfg or PretrainCfg()
    if not web:
        raise PandError("teacher pre-training: the web pool is empty (set data.synthetic.web_per_class > 0)")
    if len(fits) != len(web):
        raise PandError(f"teacher pre-training: {len(fits)} caption/class rows for {len(web)} web images")
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise PandError(f"teacher pre-training: unknown open_clip model '{arch}'")
    key = _cache_key(arch, web, val, prompts, pcfg)
    out_dir = Path(cache_dir) / "demo_teacher" / key
    ckpt = out_dir / "open_clip_model.safetensors"
    if ckpt.is_file() and (out_dir / "meta.json").is_file():
        return ckpt  # cache hit: no model is built

    torch.manual_seed(pcfg.seed)  # before the model is built, so its random init is seeded too
    gen = torch.Generator().manual_seed(pcfg.seed)
    model = open_clip.create_model(arch, pretrained=None)
    tokenizer = open_clip.get_tokenizer(arch)
    pp = open_clip_preprocess_spec(model)
    x_web = load_images_u8([w.path for w in web], pp)
    labels = torch.tensor([int(w.label) for w in web])
    tokens = tokenizer([w.caption for w in web])
    fit = torch.tensor(np.asarray(fits, dtype=bool))  # [N, C]
    by_class = [torch.nonzero(labels == c).flatten() for c in range(fit.shape[1])]
    x_val = load_images_u8([p for p, _ in val], pp)
    y_val = torch.tensor([int(y) for _, y in val])
    tokens_cls = tokenizer(list(prompts))
    # The token-embedding table (49408 x width) stays at its random init: the captions use a few dozen distinct
    # tokens, random embeddings already tell them apart, and updating the full table dominated the step time.
    model.token_embedding.requires_grad_(False)
    tag_heads, tag_targets = None, None
    if pcfg.tag_weight > 0:
        tag_heads, tag_targets = _tag_heads(web, int(model.text_projection.shape[1]))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(pcfg.init_logit_scale))
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(tag_heads.parameters()) if tag_heads is not None else []
    opt = build_optimizer(params, "adamw", pcfg.lr, weight_decay=pcfg.weight_decay)

    def tensors() -> Dict[str, torch.Tensor]:
        heads = tag_heads.state_dict() if tag_heads is not None else {}
        return {**{f"model.{k}": v for k, v in model.state_dict().items()},
                **{f"heads.{k}": v for k, v in heads.items()}}

    def exhausted() -> bool:  # the last evaluation was the patience-th without a better validation top-1
        return 0 < life.best.since and life.best.since >= pcfg.patience

    # one checkpoint per evaluation period ("epoch" e = the steps up to the (e+1)-th evaluation), continued by an
    # interrupted call with the same key; the best evaluation's is the result
    life = RunLifecycle("the demo teacher pre-training", skip_nonfinite, out_dir / "checkpoints", {"key": key},
                        AUTO, {"optimizer": opt}, f"Lower PretrainCfg.lr (now {pcfg.lr})")
    t0 = time.time()
    curve: List[Dict[str, float]] = []
    losses: List[float] = []
    applied = skipped = 0  # steps applied / skipped (non-finite) in the current evaluation period
    stopped, first = "max_steps", 0
    ck = life.open()
    if ck is not None:
        model.load_state_dict(split_prefixed(ck.tensors, "model"))
        if tag_heads is not None:
            tag_heads.load_state_dict(split_prefixed(ck.tensors, "heads"))
        life.restore(ck)
        gen.set_state(ck.state["generator"])
        curve, losses = list(ck.state["curve"]), list(ck.state["losses"])
        first = int(curve[-1]["step"])
    bar = tqdm(range(first, pcfg.max_steps), desc="teacher pre-training (web pool)", disable=not progress,
               dynamic_ncols=True)
    for step in bar:
        if exhausted():
            stopped = "patience"
            break
        model.train()
        set_lr(opt, pretrain_lr(step, pcfg))
        idx = _batch_indices(len(web), pcfg, gen, labels, neighbours, by_class)
        x = x_web[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        img = model.encode_image(normalize_u8_tensor(x, pp), normalize=True)
        txt = model.encode_text(tokens[idx], normalize=True)
        positives = fit[idx][:, labels[idx]].t()  # [i, j]: caption j is true of image i's class
        loss = clip_contrastive_loss(img, txt, model.logit_scale, positives)
        if tag_heads is not None:
            tags = tag_targets[idx]
            loss = loss + pcfg.tag_weight * (caption_tag_loss(tag_heads, img, tags)
                                             + caption_tag_loss(tag_heads, txt, tags)) / 2
        if life.finite(loss, opt, len(curve), step, lambda: f"loss = {loss.item()}"):
            optimizer_step(loss, opt)
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            applied += 1
        else:
            skipped += 1
        if (step + 1) % pcfg.eval_every == 0 or step + 1 == pcfg.max_steps:
            if applied == 0:
                raise all_skipped(life.stage, len(curve), skipped, life.fix)
            acc = _zero_shot(model, tokens_cls, x_val, y_val, pp)
            curve.append({"step": step + 1, "val_top1": acc, "loss": float(np.mean(losses[-pcfg.eval_every:])),
                          **({"skipped_steps": skipped} if skipped else {})})
            applied = skipped = 0
            best_before = life.best.value if life.best.value is not None else -1.0
            bar.set_postfix(loss=f"{curve[-1]['loss']:.3f}", val=f"{acc:.3f}", best=f"{max(acc, best_before):.3f}")
            life.best.offer(len(curve) - 1, acc)
            life.save(len(curve) - 1, tensors(), generator=gen.get_state(), curve=curve, losses=losses)
    else:
        if exhausted():
            stopped = "patience"
    bar.close()
    best_tensors, _ = life.best_tensors()
    model.load_state_dict(split_prefixed(best_tensors, "model"))
    model.eval()
    save_tensors(ckpt, model.state_dict(), metadata={"arch": arch, "key": key})
    best = curve[life.best.epoch]
    atomic_write_json(out_dir / "meta.json", {
        "arch": arch, "key": key, "web_images": len(web), "val_images": len(val), "steps": curve[-1]["step"],
        "stopped": stopped, "best_step": best["step"], "best_val_top1": best["val_top1"], "curve": curve,
        "seconds": round(time.time() - t0, 1), "cfg": asdict(pcfg),
    })
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the result is written: nothing left to resume
    return ckpt
