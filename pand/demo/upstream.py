"""The demo's stand-in for ImageNet: a student backbone pre-trained with cross-entropy on a disjoint *upstream* set.

Why the demo has a stand-in
---------------------------
The papers (VL2Lite, PAND) start the student from ImageNet weights: the PAND reference builds
``torchvision.models.<arch>(pretrained=True)``, and real runs here do the same with ``student.pretrained=true``
(torchvision's weights API, or ``student.weights=<file>`` offline). The demo cannot download those weights, and a
student trained from scratch on 10 labelled images per class is not the student of the papers: measured on the
demo's world (seed 0), distillation lost to plain cross-entropy by 14 points from scratch and was level
with it from a start pre-trained like this module does. So the demo pre-trains the student itself, on a labelled
*upstream* set that plays ImageNet's role: generic supervised features, from classes the benchmark does not have.

The upstream set
----------------
Every (body colour, wing pattern, beak shape, crest) combination of the attribute vocabulary
(:mod:`pand.data.synthetic.attributes`) whose body colour is **not** one of the benchmark's colours
(:func:`upstream_classes`): with the demo's 4 colours, purple / orange / pink / cyan x 4 wings x 3 beaks x 2 crests
= 96 classes, none sharing a combination (or even a colour) with a benchmark class. Images are drawn with
:func:`~pand.data.synthetic.render.render_bird` at the benchmark's size, clutter and noise; image ``k`` of class
``c`` in split ``s`` comes from ``numpy.random.default_rng([seed, STREAM_TAG, s, c, k])``, a 5-word seed the
benchmark's and web pool's 4-word seeds ``[seed, split, c, k]`` never equal, so no image is shared. They are
cached under ``<cache_dir>/upstream/<key>/`` (``train/`` and ``val/`` class folders + ``classes.json``, written to a
temporary folder and renamed into place; ``key`` hashes the settings) and reused.

Pre-training (:func:`pretrain_upstream_student`)
-----------------------------------------------
``create_student(arch, C_up)`` trained with cross-entropy on the upstream train split: AdamW, a per-step linear
warm-up over ``warmup_fraction`` of the steps then cosine to 0 (a one-cycle shape), RandomResizedCrop(scale) + flip
and CLIP mean/std through the student's :class:`~pand_runtime.preprocess_spec.PreprocessSpec`. Top-1 on the
held-out upstream val split is reported. The backbone (no classifier head) is written as safetensors that
``create_student(arch, C, weights=path)`` / ``student.weights=<path>`` loads with a freshly initialised head for
the benchmark's ``C`` classes, plus ``meta.json`` (top-1s, settings, seconds), under
``<cache_dir>/upstream_student/<key>/``; a second call with the same settings returns the cached result.
The run is the scaffold's run lifecycle (:mod:`pand.engine.lifecycle`): a checkpoint per epoch under
``<key>/checkpoints/`` continued by an interrupted call (removed once the result is written), and
``trainer.skip_nonfinite_steps`` honoured.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from pand.data.synthetic import BEAK_SHAPES, BODY_COLORS, CRESTS, WING_PATTERNS, BirdClass, render_bird
from pand.data.synthetic import synthetic_classes
from pand.data.synthetic.generate import GENERATOR_VERSION
from pand.data.synthetic.settings import SyntheticSettings, synthetic_cfg_dict
from pand.errors import ConfigError
from pand.utils.io import atomic_write_json, save_tensors

if TYPE_CHECKING:  # annotations only: the schema is imported where it is used (_student_spec)
    from pand.config.schema import StudentCfg

__all__ = ["STREAM_TAG", "UPSTREAM_SPLITS", "UpstreamCfg", "UpstreamResult", "upstream_classes", "upstream_hash",
           "ensure_upstream", "upstream_samples", "pretrain_upstream_student", "WEIGHTS_FILE"]

STREAM_TAG = 0x55505354  # b"UPST": the upstream images' random streams, apart from the benchmark's and the web pool's
UPSTREAM_SPLITS = {"train": 0, "val": 1}
FORMAT = "pand-upstream"
WEIGHTS_FILE = "backbone.safetensors"
_VERSION = 1  # bump when the upstream rendering or training changes, so caches are rebuilt


@dataclass
class UpstreamCfg:
    """Settings of the upstream set and of the pre-training.

    96 classes x 40 images, AdamW 2e-3 with a one-cycle shape (linear warm-up over 30% of the steps, then cosine;
    torch's AdamW weight decay 0.01 and OneCycleLR warm-up share), batch 64, crop scale 0.5-1. **8 epochs** (480
    steps): the demo's time budget (``make demo`` <= 15 min cold on 2 CPU cores, this pre-training included). The
    upstream validation top-1 it reaches is printed by the demo and recorded in ``results.json``
    (``student_init.upstream_val_top1``).
    """

    train_per_class: int = 40
    val_per_class: int = 10  # held out: the reported upstream top-1
    epochs: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.01  # torch's AdamW default
    warmup_fraction: float = 0.3  # linear warm-up share of the steps (torch OneCycleLR's pct_start)
    batch_size: int = 64
    crop_scale: Tuple[float, float] = (0.5, 1.0)
    seed: int = 0  # image streams, initialisation, data order and augmentation
    eval_batch_size: int = 256


@dataclass
class UpstreamResult:
    """What :func:`pretrain_upstream_student` returns (also the content of its ``meta.json``)."""

    weights_path: Path  # backbone without the head: pass as student.weights
    val_top1: float  # on the held-out upstream val images (eval transform)
    train_top1: float  # on the augmented training batches of the last epoch (train mode)
    classes: List[BirdClass] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the pre-training (rendering excluded); of the original run when cached
    cached: bool = False  # True when this call reused an earlier run


def upstream_classes(benchmark_cfg: Optional[SyntheticSettings] = None) -> List[BirdClass]:
    """Every attribute combination whose body colour the benchmark does not use, ids in product order.

    ``(colour, wing, beak, crest)`` over the colours of :data:`BODY_COLORS` absent from
    ``synthetic_classes(benchmark_cfg)`` x all :data:`WING_PATTERNS` x all :data:`BEAK_SHAPES` x both crests: no
    class shares a combination (nor a body colour) with the benchmark. Demo config: 4 x 4 x 3 x 2 = 96 classes.

    Raises:
        ConfigError: the benchmark uses every body colour, so no disjoint upstream class exists.
    """
    used = {b.body_color for b in synthetic_classes(benchmark_cfg)}
    colours = [name for name, _ in BODY_COLORS if name not in used]
    if not colours:
        raise ConfigError(f"the upstream set needs a body colour the benchmark does not use; data.synthetic uses all "
                          f"{len(BODY_COLORS)}. Lower data.synthetic.num_body_colors, or start the student from "
                          f"scratch / other weights (student.weights)")
    combos = itertools.product(colours, WING_PATTERNS, BEAK_SHAPES, range(len(CRESTS)))
    return [BirdClass(id=i, body_color=c, wing_pattern=w, beak_shape=k, crest=bool(r))
            for i, (c, w, k, r) in enumerate(combos)]


def _render_settings(benchmark_cfg: Optional[SyntheticSettings], settings: UpstreamCfg) -> Dict[str, Any]:
    c = synthetic_cfg_dict(benchmark_cfg)
    return {"format": FORMAT, "version": _VERSION, "generator_version": GENERATOR_VERSION,
            "image_size": int(c["image_size"]), "clutter": int(c["clutter"]), "noise_std": float(c["noise_std"]),
            "seed": int(settings.seed), "train_per_class": int(settings.train_per_class),
            "val_per_class": int(settings.val_per_class),
            "classes": [k.dirname for k in upstream_classes(benchmark_cfg)]}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def upstream_hash(benchmark_cfg: Optional[SyntheticSettings], settings: Optional[UpstreamCfg] = None) -> str:
    """16 hex digits identifying the upstream images (classes, counts, size, clutter, noise, seed, versions)."""
    return _digest(_render_settings(benchmark_cfg, settings or UpstreamCfg()))


def _complete(root: Path, digest: str) -> bool:
    try:
        meta = json.loads((root / "classes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("format") == FORMAT and meta.get("hash") == digest


def ensure_upstream(cache_dir: str | os.PathLike, benchmark_cfg: Optional[SyntheticSettings], settings: Optional[UpstreamCfg] = None,
                    progress: bool = True) -> Path:
    """The upstream images under ``<cache_dir>/upstream/<upstream_hash>/``, rendered on first use.

    Layout: ``train/<NNN.slug>/<kkkkk>.png``, ``val/...``, ``classes.json`` (``format``, ``hash``, ``settings``,
    ``classes``; written last). Rendered into a temporary sibling folder renamed into place, so an interrupted run
    leaves nothing half-written; a folder with the same hash is reused as is.
    """
    from tqdm.auto import tqdm

    settings = settings or UpstreamCfg()
    if settings.train_per_class < 1 or settings.val_per_class < 1:
        raise ConfigError(f"upstream pre-training needs train_per_class >= 1 and val_per_class >= 1, got "
                          f"{settings.train_per_class} and {settings.val_per_class}")
    spec = _render_settings(benchmark_cfg, settings)
    digest = _digest(spec)
    out = Path(cache_dir) / "upstream" / digest
    if _complete(out, digest):
        return out
    classes = upstream_classes(benchmark_cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.tmp-", dir=out.parent))
    try:
        counts = {"train": settings.train_per_class, "val": settings.val_per_class}
        with tqdm(total=sum(counts.values()) * len(classes), desc=f"upstream set ({len(classes)} classes)",
                  unit="img", disable=not progress, leave=False) as bar:
            for split, n in counts.items():
                for cls in classes:
                    d = tmp / split / cls.dirname
                    d.mkdir(parents=True)
                    for k in range(n):
                        rng = np.random.default_rng([spec["seed"] & 0xFFFFFFFF, STREAM_TAG, UPSTREAM_SPLITS[split],
                                                     cls.id, k])
                        arr = render_bird(cls, rng, spec["image_size"], spec["clutter"], spec["noise_std"])
                        Image.fromarray(arr, "RGB").save(d / f"{k:05d}.png", format="PNG")
                        bar.update(1)
        atomic_write_json(tmp / "classes.json", {
            "format": FORMAT, "hash": digest, "settings": spec,
            "classes": [{"id": k.id, "name": k.name, "dir": k.dirname, "attributes": k.attributes()} for k in classes],
        })
        try:
            os.rename(tmp, out)
        except OSError:
            if not _complete(out, digest):  # not another process finishing the same set first
                if out.exists():
                    shutil.rmtree(out)
                os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def upstream_samples(root: str | os.PathLike, split: str) -> List[Tuple[str, int]]:
    """``(path, label)`` of every image of ``split`` (``train`` | ``val``) of an upstream folder, in label order."""
    meta = json.loads((Path(root) / "classes.json").read_text(encoding="utf-8"))
    out = []
    for k in meta["classes"]:
        d = Path(root) / split / k["dir"]
        out += [(str(p), int(k["id"])) for p in sorted(d.glob("*.png"))]
    return out


def _student_spec(student_cfg: Optional[StudentCfg], image_size: int):
    from pand.config.schema import StudentCfg
    from pand.data.transforms import preprocess_spec_from_student

    return preprocess_spec_from_student(student_cfg if student_cfg is not None else StudentCfg(image_size=image_size))


def _run_key(arch: str, data_key: str, settings: UpstreamCfg, spec: Any) -> str:
    return _digest({"arch": arch, "data": data_key, "settings": asdict(settings), "spec": asdict(spec),
                    "version": _VERSION})


def _load_result(out_dir: Path, classes: List[BirdClass]) -> Optional[UpstreamResult]:
    weights = out_dir / WEIGHTS_FILE
    try:
        meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not weights.is_file():
        return None
    return UpstreamResult(weights_path=weights, val_top1=float(meta["val_top1"]),
                          train_top1=float(meta["train_top1"]), classes=classes, seconds=float(meta["seconds"]),
                          cached=True)


def pretrain_upstream_student(arch: str, benchmark_cfg: Optional[SyntheticSettings], cache_dir: str | os.PathLike,
                              settings: Optional[UpstreamCfg] = None, progress: bool = True,
                              student_cfg: Optional[StudentCfg] = None, device: str = "cpu",
                              skip_nonfinite: bool = False) -> UpstreamResult:
    """Pre-train (or reuse) the student backbone ``arch`` with cross-entropy on the upstream set.

    Args:
        arch: student registry name (:func:`pand.models.students.create_student`), e.g. ``resnet18``.
        benchmark_cfg: the benchmark's ``data.synthetic`` (its colours are excluded; its image size, clutter and
            noise are used).
        cache_dir: cache root (images under ``upstream/``, weights under ``upstream_student/``).
        settings: :class:`UpstreamCfg` (defaults: 40 + 10 images per class, 8 epochs, AdamW 2e-3, batch 64).
        progress: tqdm bars.
        student_cfg: the benchmark student's ``student`` section, whose preprocessing (size, resize,
            interpolation, mean/std) the transforms use; None = CLIP mean/std at the benchmark's image size.
        device: where to train.
        skip_nonfinite: ``trainer.skip_nonfinite_steps`` (a NaN/inf step is skipped and counted instead of stopping
            with :class:`~pand.engine.lifecycle.NonFiniteLossError`).

    Returns:
        :class:`UpstreamResult`; ``weights_path`` holds the backbone's state dict (no ``linear_cls`` / ``fc``), for
        ``student.weights=<path>``.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from pand.data.base import FGVCDataset
    from pand.data.transforms import create_transform
    from pand.engine.checkpoint import split_prefixed
    from pand.engine.lifecycle import AUTO, RunLifecycle, all_skipped
    from pand.engine.loaders import make_eval_loader, make_train_loader
    from pand.engine.loop import evaluate, train_one_epoch
    from pand.engine.optim import build_optimizer, build_scheduler
    from pand.engine.step import optimizer_step
    from pand.models.students import create_student
    from pand.utils.distributed import DistInfo

    settings = settings or UpstreamCfg()
    if settings.epochs < 1 or settings.batch_size < 2:
        raise ConfigError(f"upstream pre-training needs epochs >= 1 and batch_size >= 2, got {settings.epochs} and "
                          f"{settings.batch_size}")
    classes = upstream_classes(benchmark_cfg)
    image_size = int(synthetic_cfg_dict(benchmark_cfg)["image_size"])
    spec = _student_spec(student_cfg, image_size)
    data_key = upstream_hash(benchmark_cfg, settings)
    key = _run_key(arch, data_key, settings, spec)
    out_dir = Path(cache_dir) / "upstream_student" / key
    cached = _load_result(out_dir, classes)
    if cached is not None:
        return cached

    root = ensure_upstream(cache_dir, benchmark_cfg, settings, progress=progress)
    names = [k.name for k in classes]
    train_ds = FGVCDataset(upstream_samples(root, "train"), names,
                           create_transform(spec, True, "standard", settings.crop_scale), name="upstream/train")
    val_ds = FGVCDataset(upstream_samples(root, "val"), names, create_transform(spec, False), name="upstream/val")
    dev = torch.device(device)
    dist = DistInfo()
    loader_cfg = SimpleNamespace(num_workers=0, pin_memory=False, persistent_workers=False)
    train_loader = make_train_loader(train_ds, settings.batch_size, settings.seed, dist, loader_cfg, dev.type)
    val_loader = make_eval_loader(val_ds, settings.eval_batch_size, dist, loader_cfg, dev.type)

    torch.manual_seed(settings.seed)  # the initialisation of backbone and head
    model = create_student(arch, len(classes)).to(dev)
    opt = build_optimizer(model.parameters(), "adamw", settings.lr, weight_decay=settings.weight_decay)
    steps = settings.epochs * len(train_loader)
    # stepped once per optimiser step: linear warm-up, then cosine to 0 over the remaining steps
    sched = build_scheduler(opt, "cosine", steps, warmup_epochs=int(round(settings.warmup_fraction * steps)))

    fix = f"Lower the learning rate (UpstreamCfg.lr={settings.lr})"
    # a checkpoint per epoch, continued by an interrupted call with the same key, removed once the result is written
    life = RunLifecycle("the upstream pre-training", skip_nonfinite, out_dir / "checkpoints", {"key": key}, AUTO,
                        {"optimizer": opt, "scheduler": sched}, fix)
    curve: List[Dict[str, float]] = []
    ck = life.open()
    if ck is not None:
        model.load_state_dict(split_prefixed(ck.tensors, "model"))
        life.restore(ck)
        curve = list(ck.state["curve"])

    def step(epoch: int, i: int, batch) -> Optional[Tuple[Dict[str, Any], int]]:
        x, y = batch[0].to(dev), batch[1].to(dev)
        z = model(x)
        loss = F.cross_entropy(z, y)
        if not life.finite(loss, opt, epoch, i, lambda: f"loss = {loss.item()}"):
            return None  # skipped: neither the weights nor the schedule move
        optimizer_step(loss, opt)
        sched.step()
        return {"loss": loss.item() * len(y), "correct": int((z.argmax(1) == y).sum())}, len(y)

    t0 = time.time()
    model.train()
    bar = tqdm(total=steps, initial=life.start * len(train_loader), unit="step", disable=not progress,
               desc=f"upstream pre-training ({arch}, {len(classes)} classes)", dynamic_ncols=True)

    def on_step(i: int, values, totals) -> None:  # running loss / train top-1 of the current epoch
        bar.update(1)
        if totals.images and (i + 1) % 10 == 0:
            bar.set_postfix(epoch=f"{len(curve) + 1}/{settings.epochs}",
                            loss=f"{totals.sums['loss'] / totals.images:.3f}",
                            train=f"{totals.sums['correct'] / totals.images:.3f}", refresh=False)

    for epoch in range(life.start, settings.epochs):
        train_loader.sampler.set_epoch(epoch, epoch)  # fresh augmentation (view = epoch) and order per epoch
        totals = train_one_epoch(train_loader, lambda i, batch: step(epoch, i, batch), on_step)
        if totals.steps == 0 and totals.skipped:
            raise all_skipped(life.stage, epoch, totals.skipped, fix)
        curve.append({"epoch": epoch + 1, "loss": totals.sums["loss"] / max(totals.images, 1),
                      "train_top1": totals.sums["correct"] / max(totals.images, 1),
                      "seconds": round(totals.seconds, 1), **({"skipped_steps": totals.skipped} if totals.skipped
                                                               else {})})
        life.best.take(epoch)  # no selection: the last epoch is the result
        life.save(epoch, {f"model.{k}": v for k, v in model.state_dict().items()}, curve=curve)
    bar.close()
    val = evaluate(model, val_loader, dev)
    seconds = round(time.time() - t0, 1)
    model.eval()
    save_tensors(out_dir / WEIGHTS_FILE, model.backbone.state_dict(),
                 metadata={"arch": arch, "key": key, "upstream_classes": len(classes)})
    atomic_write_json(out_dir / "meta.json", {  # written last: marks the run complete
        "arch": arch, "key": key, "data_key": data_key, "data_root": str(root), "val_top1": val["top1"],
        "val_loss": val["loss"], "val_images": val["n"], "train_top1": curve[-1]["train_top1"],
        "train_images": len(train_ds), "classes": len(classes), "steps": steps, "seconds": seconds,
        "settings": asdict(settings), "preprocess": asdict(spec), "curve": curve,
        "torch_threads": torch.get_num_threads(),
    })
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the result is written: nothing left to resume
    return UpstreamResult(weights_path=out_dir / WEIGHTS_FILE, val_top1=val["top1"],
                          train_top1=curve[-1]["train_top1"], classes=classes, seconds=seconds)
