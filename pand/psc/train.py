"""Stage PSC: train CoOp context vectors on cached teacher image features (docs/method.md, "Stage PSC").

Per batch of cached, L2-normalised image features ``f [B, D]`` the text features of all classes
``T = CoOp() [C, D]`` are recomputed through the frozen text tower, and

    logits = s * f @ T^T  [B, C],   s = exp(CLIP logit scale) (frozen),   loss = CE(logits, y).

Only ``ctx`` trains (SGD lr 0.002, momentum 0.9 by default; cosine over the epochs, stepped per epoch, optional
constant warm-up at 1e-5 as in CoOp; gradient-norm clip 1.0). The epoch kept is the best on the held-out
validation split (early stopping after ``psc.patience`` epochs without improvement); test accuracy is measured
once, for the kept context only. The zero-shot accuracy of the hand-crafted template is reported beside it.

Outputs under ``run_dir/psc/``: ``metrics.jsonl`` (one line per epoch), ``summary.json``,
``learned_text_features.safetensors`` (see :mod:`pand.psc.anchors`) and ``last.safetensors`` (resume state).
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from pand.errors import ArtifactError, PandError

from .anchors import ARTIFACT_NAME, handcrafted_anchors, load_anchors, save_anchors

__all__ = [
    "PSC_SETTINGS", "coop_logits", "accuracy", "cosine_lr", "psc_config_hash", "PSCResult", "train_coop", "run_psc",
]

# psc fields that change the learned anchors (artifact/enabled do not)
PSC_SETTINGS = ("n_ctx", "ctx_init", "csc", "class_token_position", "prompt_form", "optimizer", "lr", "momentum",
                "weight_decay", "epochs", "batch_size", "warmup_epochs", "patience", "grad_clip")
WARMUP_LR = 1e-5  # CoOp's constant warm-up learning rate


# -- pure math -------------------------------------------------------------------------------------------------
def coop_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """``logit_scale * f @ T^T``.

    Args:
        image_features: ``[B, D]`` L2-normalised image features.
        text_features: ``[C, D]`` L2-normalised class text features.
        logit_scale: ``s = exp(CLIP logit scale)`` (a float, frozen).

    Returns:
        ``[B, C]`` logits.
    """
    return logit_scale * image_features @ text_features.t().to(image_features.dtype)


@torch.no_grad()
def accuracy(image_features: torch.Tensor, labels: torch.Tensor, text_features: torch.Tensor) -> float:
    """Top-1 accuracy of ``argmax_c f_i . T_c`` against ``labels`` (``[N, D]``, ``[N]``, ``[C, D]``); nan if N=0."""
    if image_features.shape[0] == 0:
        return float("nan")
    pred = (image_features.float() @ text_features.float().t().to(image_features.device)).argmax(dim=1)
    return float((pred.cpu() == labels.cpu()).float().mean())


def cosine_lr(epoch: int, base_lr: float, epochs: int, warmup_epochs: int = 0, warmup_lr: float = WARMUP_LR) -> float:
    """Learning rate of (0-based) ``epoch``: constant ``warmup_lr`` for the first ``warmup_epochs``, then
    ``base_lr * (1 + cos(pi * t / T)) / 2`` with ``t = epoch - warmup_epochs`` and ``T = epochs - warmup_epochs``."""
    if epoch < warmup_epochs:
        return float(warmup_lr)
    T = max(1, int(epochs) - int(warmup_epochs))
    t = min(epoch - int(warmup_epochs), T)
    return float(base_lr) * 0.5 * (1.0 + math.cos(math.pi * t / T))


def _cfg_get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    if hasattr(node, "get"):
        return node.get(key, default)
    return getattr(node, key, default)


def psc_config_hash(psc_cfg: Any, parts: Mapping[str, Any]) -> str:
    """sha256 of the PSC settings that change the anchors plus ``parts`` (teacher, classes, template, data, seed)."""
    from pand.utils.io import sha256_bytes

    settings = {k: _cfg_get(psc_cfg, k) for k in PSC_SETTINGS}
    blob = json.dumps({"psc": settings, **{str(k): v for k, v in parts.items()}}, sort_keys=True, default=str)
    return sha256_bytes(blob.encode("utf-8"))


# -- training loop ------------------------------------------------------------------------------------------------
@dataclass
class PSCResult:
    """What :func:`train_coop` selected: the context of the best validation epoch."""

    best_ctx: torch.Tensor
    best_epoch: int
    best_val_acc: Optional[float]  # None without a validation split
    epochs_run: int
    selection: str
    history: List[Dict[str, Any]] = field(default_factory=list)


def _make_optimizer(params, psc_cfg: Any) -> torch.optim.Optimizer:
    name = str(_cfg_get(psc_cfg, "optimizer", "sgd"))
    lr, wd = float(_cfg_get(psc_cfg, "lr", 0.002)), float(_cfg_get(psc_cfg, "weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(_cfg_get(psc_cfg, "momentum", 0.9)), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise PandError(f"psc.optimizer must be sgd or adamw, got {name!r}")


def _optimizer_tensors(opt: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Flatten an optimizer state dict into tensors + JSON (safetensors cannot hold a nested dict)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    state: Dict[int, Dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = t
    for name, v in (info.get("scalars") or {}).items():
        pid, k = name.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _write_metrics(path: Path, history: List[Dict[str, Any]]) -> None:
    from pand.utils.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(h) + "\n" for h in history))


def train_coop(
    model: Any,
    train: Tuple[torch.Tensor, torch.Tensor],
    val: Optional[Tuple[torch.Tensor, torch.Tensor]],
    psc_cfg: Any,
    logit_scale: float,
    out_dir: str | Path,
    seed: int = 0,
    config_hash: str = "",
    autocast: Any = None,
    amp_dtype: Optional[torch.dtype] = None,
    progress: bool = True,
    skip_nonfinite: bool = False,
) -> PSCResult:
    """Train ``model.prompt_learner.ctx`` with CE on cached features; select on ``val``.

    Args:
        model: :class:`pand.psc.prompt_learner.CoOpTextModel` on the training device.
        train: ``(features [N, D], labels [N])`` of the train split.
        val: the same for the held-out validation split (None/empty: the last epoch is kept).
        psc_cfg: the ``psc`` section (optimizer, lr, momentum, weight_decay, epochs, batch_size, warmup_epochs,
            patience, grad_clip).
        logit_scale: frozen ``exp`` CLIP scale.
        out_dir: where ``metrics.jsonl`` and the resume state ``last.safetensors`` go.
        seed: shuffling seed (epoch ``e`` uses ``seed * 1_000_003 + e``, so a resumed run replays the same order).
        config_hash: stored with the resume state; a state with another hash is ignored.
        autocast: callable returning the autocast context (``Teacher.autocast``); None = fp32.
        amp_dtype: autocast dtype (a GradScaler is used for fp16).
        progress: tqdm bar over epochs.
        skip_nonfinite: a step whose loss is NaN/inf is skipped (not applied), counted in the epoch record's
            ``skipped_steps`` and warned about, instead of stopping the stage (``trainer.skip_nonfinite_steps``).

    Raises:
        PandError: a non-finite loss (naming the epoch and step; nothing of that step is applied) unless
            ``skip_nonfinite``, or an epoch in which every step was non-finite.

    Returns:
        :class:`PSCResult` with the best context (CPU copy).
    """
    from tqdm.auto import tqdm

    from pand.utils.io import load_tensors, save_tensors

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = model.prompt_learner.ctx.device
    ctx = model.prompt_learner.ctx
    epochs = int(_cfg_get(psc_cfg, "epochs", 200))
    bs = max(1, int(_cfg_get(psc_cfg, "batch_size", 32)))
    patience = int(_cfg_get(psc_cfg, "patience", 0) or 0)
    clip = float(_cfg_get(psc_cfg, "grad_clip", 0.0) or 0.0)
    warmup = int(_cfg_get(psc_cfg, "warmup_epochs", 0) or 0)
    base_lr = float(_cfg_get(psc_cfg, "lr", 0.002))
    opt = _make_optimizer([ctx], psc_cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    amp = autocast if autocast is not None else (lambda: torch.autocast("cpu", enabled=False))

    xtr, ytr = train[0].to(device).float(), train[1].to(device).long()
    has_val = val is not None and val[0].shape[0] > 0
    if xtr.shape[0] == 0:
        raise PandError("Stage PSC: the train split is empty")
    if not has_val:
        warnings.warn("Stage PSC: no validation split; the last epoch is kept (no model selection)")

    state: Dict[str, Any] = dict(start=0, best_acc=None, best_epoch=-1, bad=0)
    best_ctx = ctx.detach().cpu().clone()
    history: List[Dict[str, Any]] = []
    last = out_dir / "last.safetensors"
    if last.is_file():
        try:
            t, meta = load_tensors(last)
            if meta.get("config_hash") == config_hash and tuple(t["ctx"].shape) == tuple(ctx.shape):
                with torch.no_grad():
                    ctx.copy_(t["ctx"].to(device))
                best_ctx = t["best_ctx"].clone()
                _load_optimizer(opt, t, meta["optimizer"])
                state.update(meta["state"])
                history = [h for h in meta.get("history", []) if h["epoch"] < state["start"]]
        except Exception as e:  # noqa: BLE001 - a damaged resume state means starting over
            warnings.warn(f"ignoring unreadable PSC resume state {last} ({type(e).__name__}: {e})")

    bar = tqdm(range(state["start"], epochs), desc="PSC", unit="ep", disable=not progress, leave=False)
    for epoch in bar:
        if patience > 0 and state["bad"] >= patience:
            break
        t0 = time.time()
        lr = cosine_lr(epoch, base_lr, epochs, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
        perm = torch.randperm(xtr.shape[0], generator=gen).to(device)
        loss_sum, correct, seen, skipped = 0.0, 0, 0, 0
        for i in range(0, perm.numel(), bs):
            idx = perm[i:i + bs]
            x, y = xtr[idx], ytr[idx]
            with amp():
                text = model()
                logits = coop_logits(x, text.float(), logit_scale)
                loss = torch.nn.functional.cross_entropy(logits.float(), y)
            if not bool(torch.isfinite(loss.detach())):
                where = (f"Stage PSC: non-finite loss ({float(loss.detach())}) at epoch {epoch} step {i // bs}"
                         + ("; the features hold NaN/inf" if not bool(torch.isfinite(x).all()) else ""))
                if not skip_nonfinite:
                    raise PandError(f"{where}. The step was not applied; the resume state in {last} is the end of "
                                    f"the previous epoch. Lower psc.lr, keep psc.grad_clip > 0, use "
                                    f"teacher.precision=fp32, or set trainer.skip_nonfinite_steps=true to skip such "
                                    f"steps.")
                warnings.warn(f"{where}: step skipped (trainer.skip_nonfinite_steps=true)")
                skipped += 1
                opt.zero_grad(set_to_none=True)
                continue
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([ctx], clip)
            scaler.step(opt)
            scaler.update()
            loss_sum += float(loss.detach()) * y.numel()
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += y.numel()
        model.eval()
        if seen == 0:
            raise PandError(f"Stage PSC: every step of epoch {epoch} had a non-finite loss ({skipped} skipped); "
                            f"nothing can be learned. Check the features (delete the feature cache under "
                            f"cache_dir/features) and lower psc.lr.")
        rec: Dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                               "skipped_steps": skipped}
        if has_val:
            with torch.no_grad(), amp():
                rec["val_acc"] = accuracy(val[0].to(device), val[1], model().float())
            improved = state["best_acc"] is None or rec["val_acc"] > state["best_acc"]
        else:
            improved = True
        if improved:
            state.update(best_acc=rec.get("val_acc"), best_epoch=epoch, bad=0)
            best_ctx = ctx.detach().cpu().clone()
        else:
            state["bad"] += 1
        rec.update(best_val_acc=state["best_acc"], best_epoch=state["best_epoch"], seconds=round(time.time() - t0, 4))
        history.append(rec)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val=f"{rec.get('val_acc') or float('nan'):.3f}")
        state["start"] = epoch + 1
        opt_t, opt_info = _optimizer_tensors(opt)
        save_tensors(last, {"ctx": ctx, "best_ctx": best_ctx, **opt_t},
                     {"config_hash": config_hash, "state": state, "optimizer": opt_info, "history": history})
        _write_metrics(out_dir / "metrics.jsonl", history)
    bar.close()
    _write_metrics(out_dir / "metrics.jsonl", history)
    return PSCResult(
        best_ctx=best_ctx, best_epoch=int(state["best_epoch"]), best_val_acc=state["best_acc"],
        epochs_run=len(history), selection="best_val_acc" if has_val else "last_epoch (no validation split)",
        history=history,
    )


# -- stage orchestration -------------------------------------------------------------------------------------------
def _device(cfg: Any) -> torch.device:
    acc = str(_cfg_get(cfg.trainer, "accelerator", "auto")) if _cfg_get(cfg, "trainer") is not None else "auto"
    if acc == "cuda" or (acc == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise PandError("trainer.accelerator=cuda but CUDA is not available; use trainer.accelerator=cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def _check_given_artifact(cfg: Any, splits: Any, teacher: Any) -> Path:
    path = Path(str(cfg.psc.artifact)).expanduser()
    num_classes = len(splits.class_names) if splits is not None else None
    if num_classes is None and _cfg_get(cfg.data, "class_names"):
        num_classes = len(cfg.data.class_names)
    load_anchors(path, num_classes, embed_dim=getattr(teacher, "embed_dim", None),
                 teacher_id=getattr(teacher, "identity", None),
                 class_names=list(splits.class_names) if splits is not None else None)
    return path


def run_psc(cfg: Any, run_dir: str | Path, splits: Any = None, teacher: Any = None, progress: bool = True,
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
    from pand.models.teacher import create_teacher, same_teacher, split_identity, teacher_summary
    from pand.utils.io import atomic_write_json, load_tensors

    from .features import content_hash, extract_features, samples_hash
    from .prompt_learner import build_coop_text_model

    if _cfg_get(cfg.psc, "artifact"):
        return _check_given_artifact(cfg, splits, teacher)

    out_dir = Path(run_dir) / "psc"
    artifact = out_dir / ARTIFACT_NAME
    if splits is None:
        from pand.data import build_splits

        splits = build_splits(cfg.data, cache_dir=cfg.cache_dir)
    if teacher is None:
        teacher = create_teacher(cfg.teacher, device=_device(cfg))
    class_names = list(splits.class_names)
    template = str(getattr(splits, "template", None) or _cfg_get(cfg.data, "template", "a photo of a {}."))
    seed = int(_cfg_get(cfg.trainer, "seed", 0))
    arch, _, whash = split_identity(teacher.identity)
    parts = {
        "teacher": f"{arch}|{whash}", "teacher_image_size": teacher.image_size, "class_names": class_names,
        "template": template, "seed": seed, "data": str(_cfg_get(cfg.data, "name", "")),
        "train": samples_hash(splits.train), "val": samples_hash(splits.val) if splits.val is not None else None,
        # image files rewritten in place (same paths) give other features, so other anchors
        "content": [content_hash(splits.train), content_hash(splits.val) if splits.val is not None else None],
    }
    chash = psc_config_hash(cfg.psc, parts)

    if artifact.is_file():
        try:
            _, meta = load_tensors(artifact)
            fits = (meta.get("class_names") == class_names
                    and same_teacher(str(meta.get("teacher_identity")), teacher.identity))
            if fits and meta.get("config_hash") == chash:
                return artifact
            # an artifact written before file fingerprints were part of the hash: kept for a resumed run only
            legacy = psc_config_hash(cfg.psc, {k: v for k, v in parts.items() if k != "content"})
            if fits and reuse_only and meta.get("config_hash") == legacy:
                warnings.warn(f"{artifact} predates image fingerprints in its config hash: reused for this resumed "
                              f"run without checking that the train/val image files are unchanged")
                return artifact
        except Exception as e:  # noqa: BLE001 - unreadable artifact: recompute
            warnings.warn(f"recomputing PSC: existing artifact {artifact} is unreadable ({e})")
    if reuse_only:
        raise ArtifactError(
            f"{artifact} is missing or no longer matches this run's inputs (teacher, class names, template, PSC "
            f"settings, or the train/val image files changed since the NSD checkpoint was written); resuming would "
            f"continue the student with other anchors. Restore the original inputs, or start a new run with another "
            f"--run-dir."
        )

    t_start = time.time()
    cache = Path(cfg.cache_dir) / "features"
    bs = int(_cfg_get(cfg.teacher, "batch_size", 64))
    workers = int(_cfg_get(cfg.trainer, "num_workers", 0))
    dname = str(_cfg_get(cfg.data, "name", ""))

    def feats(split: str):
        ds = getattr(splits, split)
        if ds is None or len(ds) == 0:
            return None
        return extract_features(teacher, ds, cache, key_extra={"split": split, "data": dname}, batch_size=bs,
                                num_workers=workers, progress=progress)

    train, val, test = feats("train"), feats("val"), feats("test")
    if train is None:
        raise PandError("Stage PSC: the train split is empty")
    t_feat = time.time() - t_start

    prompts = [template.format(n) for n in class_names]
    zs_text = handcrafted_anchors(teacher, prompts)
    zero_shot = {s: (accuracy(d[0], d[1], zs_text) if d is not None else None)
                 for s, d in (("train", train), ("val", val), ("test", test))}

    model = build_coop_text_model(teacher.model, teacher.tokenizer, class_names, cfg.psc, template=template,
                                  seed=seed).to(teacher.device)
    res = train_coop(model, train, val, cfg.psc, teacher.logit_scale, out_dir, seed=seed, config_hash=chash,
                     autocast=teacher.autocast, amp_dtype=teacher.amp_dtype, progress=progress,
                     skip_nonfinite=bool(_cfg_get(cfg.trainer, "skip_nonfinite_steps", False)))
    model.prompt_learner.load_ctx(res.best_ctx)
    model.eval()
    with torch.no_grad():
        text = model().float().cpu()
    coop = {s: (accuracy(d[0], d[1], text) if d is not None else None)
            for s, d in (("train", train), ("val", val), ("test", test))}

    meta = {
        "format": "pand-psc-v1",
        "class_names": class_names,
        "prompts": prompts,
        "n_ctx": int(cfg.psc.n_ctx),
        "ctx_init": _cfg_get(cfg.psc, "ctx_init"),
        "csc": bool(cfg.psc.csc),
        "prompt_form": str(cfg.psc.prompt_form),
        "class_token_position": str(cfg.psc.class_token_position),
        "template": template,
        "teacher_identity": teacher.identity,
        "embed_dim": int(teacher.embed_dim),
        "context_length": int(model.prompt_learner.tokenized_prompts.shape[1]),
        "logit_scale": teacher.logit_scale,
        "val_acc": coop["val"], "test_acc": coop["test"],
        "zero_shot_val_acc": zero_shot["val"], "zero_shot_test_acc": zero_shot["test"],
        "best_epoch": res.best_epoch, "selection": res.selection,
        "config_hash": chash,
    }
    save_anchors(artifact, text, res.best_ctx, meta)
    summary = {
        "artifact": str(artifact),
        "teacher": teacher_summary(teacher),
        "num_classes": len(class_names),
        "counts": {s: (int(d[0].shape[0]) if d is not None else 0)
                   for s, d in (("train", train), ("val", val), ("test", test))},
        "coop": coop,
        "zero_shot": zero_shot,
        "best_epoch": res.best_epoch,
        "best_val_acc": res.best_val_acc,
        "epochs_run": res.epochs_run,
        "selection": res.selection,
        "settings": {k: _cfg_get(cfg.psc, k) for k in PSC_SETTINGS},
        "config_hash": chash,
        "seconds": {"features": round(t_feat, 3), "total": round(time.time() - t_start, 3)},
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return artifact
