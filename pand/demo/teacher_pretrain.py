"""Contrastive pre-training of a tiny open_clip teacher on the synthetic benchmark's base classes.

The demo needs a teacher that *knows something* without downloading weights: a tiny open_clip model
(``pand-tiny-vit``) is trained CLIP-style on the image/caption pairs of the **base** classes of the
training split only (novel classes and test images are never seen), so its zero-shot accuracy on the
novel classes measures real compositional transfer from caption words.

Loss (InfoNCE, as CLIP, with the model's learnable ``logit_scale``)::

    L = ( CE(s * I T^T, arange(B)) + CE(s * T I^T, arange(B)) ) / 2,   s = exp(logit_scale) <= 100

with I [B, D], T [B, D] the L2-normalised image and caption embeddings. Each batch holds one image of
each of ``B`` *distinct* classes, so no caption is a false negative of another image in the batch.

The checkpoint is cached under ``<cache_dir>/demo_teacher/<hash>/`` (safetensors + ``meta.json``), the
hash covering the model arch, the data (class names, sample list), the schedule and the seed, so a
second demo reuses it and any change retrains.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from pand.errors import PandError

if TYPE_CHECKING:
    import torch

__all__ = ["PretrainCfg", "pretrain_teacher", "clip_contrastive_loss"]


@dataclass
class PretrainCfg:
    epochs: int = 40
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    images_per_class: int = 2  # per step: each class contributes this many (image, caption) pairs
    seed: int = 0


def clip_contrastive_loss(img: "torch.Tensor", txt: "torch.Tensor", logit_scale: "torch.Tensor", groups=None):
    """Symmetric InfoNCE. ``img``/``txt`` [B, D] L2-normalised; ``logit_scale`` scalar (log space).

    ``groups`` [B] (optional): samples of the same group (class) are all positives of each other; the
    target distribution of a row is uniform over its group (so duplicate captions are not negatives).
    """
    import torch
    import torch.nn.functional as F

    s = logit_scale.exp().clamp(max=100.0)
    logits = s * img @ txt.t()
    if groups is None:
        target = torch.arange(img.shape[0], device=img.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    same = (groups[:, None] == groups[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    li = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    lt = -(target * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return (li + lt) / 2


def _cache_key(arch: str, samples: Sequence, class_names: Sequence[str], pcfg: PretrainCfg, image_size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"arch": arch, "classes": list(class_names), "cfg": asdict(pcfg), "size": image_size}).encode())
    for p, y in samples:
        h.update(f"{Path(p).name}:{y};".encode())
    return h.hexdigest()[:16]


def pretrain_teacher(
    arch: str,
    train_samples: Sequence,
    captions: Dict[str, str],
    class_names: Sequence[str],
    classes: Sequence[int],
    cache_dir: str | Path,
    pcfg: Optional[PretrainCfg] = None,
    progress: bool = True,
) -> Path:
    """Train (or reuse) a tiny open_clip teacher on the image/caption pairs of ``classes``.

    Args:
        arch: open_clip model name (e.g. ``pand-tiny-vit``; registered by :mod:`pand.models.teacher`).
        train_samples: ``(path, label)`` of the training split; only labels in ``classes`` are used.
        captions: absolute image path -> caption.
        class_names: all class names (for the cache key).
        classes: the class ids to train on (the base classes).
        cache_dir: root of the cache.
        pcfg: schedule.

    Returns:
        Path of the ``open_clip_model.safetensors`` checkpoint (loadable with ``teacher.pretrained=<path>``).
    """
    import numpy as np
    import open_clip
    import torch
    from PIL import Image
    from tqdm import tqdm

    import pand.models.teacher  # noqa: F401  registers the tiny open_clip configs
    from pand.utils.io import atomic_write_json, save_tensors

    pcfg = pcfg or PretrainCfg()
    keep = set(int(c) for c in classes)
    samples = [(p, y) for p, y in train_samples if y in keep]
    if not samples:
        raise PandError("teacher pre-training: no training images in the requested classes")
    missing = [p for p, _ in samples if p not in captions]
    if missing:
        raise PandError(f"teacher pre-training: {len(missing)} images have no caption, e.g. {missing[0]}")

    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise PandError(f"teacher pre-training: unknown open_clip model '{arch}'")
    image_size = model_cfg["vision_cfg"]["image_size"]
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    key = _cache_key(arch, samples, class_names, pcfg, image_size)
    out_dir = Path(cache_dir) / "demo_teacher" / key
    ckpt = out_dir / "open_clip_model.safetensors"
    if ckpt.is_file() and (out_dir / "meta.json").is_file():
        return ckpt  # cache hit: no model is built

    torch.manual_seed(pcfg.seed)  # before the model is built, so its random init is seeded too
    model, preprocess_train, _ = open_clip.create_model_and_transforms(arch, pretrained=None)
    rng = random.Random(pcfg.seed)
    tokenizer = open_clip.get_tokenizer(arch)
    by_class: Dict[int, List[str]] = {}
    for p, y in samples:
        by_class.setdefault(y, []).append(p)
    cls_ids = sorted(by_class)
    n_img = {y: len(v) for y, v in by_class.items()}
    steps_per_epoch = max(1, math.ceil(max(n_img.values()) / pcfg.images_per_class))
    total = steps_per_epoch * pcfg.epochs

    # decode every image once (the images are tiny); augmentation runs on the PIL image each step
    images = {p: Image.open(p).convert("RGB") for p in (q for v in by_class.values() for q in v)}
    # The token-embedding table (49408 x width) stays at its random init: the captions use a few dozen distinct
    # tokens, random embeddings already tell them apart, and updating the full table dominated the step time.
    model.token_embedding.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=pcfg.lr,
                            weight_decay=pcfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < pcfg.warmup_steps:
            return pcfg.lr * (step + 1) / pcfg.warmup_steps
        t = (step - pcfg.warmup_steps) / max(1, total - pcfg.warmup_steps)
        return 0.5 * pcfg.lr * (1 + math.cos(math.pi * t))

    model.train()
    t0 = time.time()
    bar = tqdm(range(total), desc="teacher pre-training", disable=not progress, dynamic_ncols=True)
    losses = []
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch_paths, groups = [], []
        for y in cls_ids:
            for _ in range(pcfg.images_per_class):
                batch_paths.append(rng.choice(by_class[y]))
                groups.append(y)
        x = torch.stack([preprocess_train(images[p]) for p in batch_paths])
        tok = tokenizer([captions[p] for p in batch_paths])
        img = model.encode_image(x, normalize=True)
        txt = model.encode_text(tok, normalize=True)
        loss = clip_contrastive_loss(img, txt, model.logit_scale, torch.tensor(groups))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    model.eval()
    save_tensors(ckpt, model.state_dict(), metadata={"arch": arch, "key": key})
    atomic_write_json(out_dir / "meta.json", {
        "arch": arch, "key": key, "classes": sorted(keep), "num_images": len(samples), "steps": total,
        "final_loss": float(np.mean(losses[-20:])), "seconds": round(time.time() - t0, 1), "cfg": asdict(pcfg),
    })
    return ckpt
