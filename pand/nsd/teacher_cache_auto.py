"""``nsd.teacher_cache.views=auto``: use the teacher-feature cache only when it is projected to pay off.

The cache (:mod:`pand.nsd.teacher_cache`) replaces ``E`` epochs of teacher forwards by ``V`` views encoded once, but
it pays for them up front, and a small teacher (the demo's) costs little next to the student's own training step:
there the build is not repaid and the cache is slower end to end. ``auto`` decides per run:

1. **Measure** (:func:`measure_step_costs`, rank 0, before the student is built and before
   :func:`~pand.utils.seed.seed_everything`; every RNG is restored afterwards, so the seeded training trajectory is
   the one of an explicit ``views``): on a few training batches of the real per-device batch size (one warm-up
   batch, then the fastest of 3 timed ones), the seconds per batch of decoding + augmenting (one process), the
   teacher forward (the :class:`~pand.models.teacher_source.LiveTeacher` path), one student step (forward, loss
   and the scaffold's :func:`~pand.engine.step.optimizer_step`: backward, clipping, optimiser step) on a
   throw-away copy of the student (random init, no ``torch.compile``, no DDP gradient all-reduce), and a cache
   lookup (:meth:`~pand.nsd.teacher_cache.TeacherFeatureCache.lookup` on an in-memory table,
   :meth:`~pand.nsd.teacher_cache.TeacherFeatureCache.in_memory`).
2. **Project** (:func:`project_teacher_cache`, pure): the end-to-end seconds of ``E`` epochs with the live teacher
   vs building a ``V = min(8, E)``-view cache and then ``E`` epochs of student steps + lookups (no build when a
   complete cache with that key already exists).
3. **Choose** the cache when it is projected to take at most 90% of the live time (at least 10% faster), else the
   live teacher. The choice, the measured numbers and the reason are printed, written to
   ``<nsd dir>/teacher_cache_choice.json``, logged as a ``kind: teacher_cache`` record in ``metrics.jsonl`` and
   returned in the run's ``summary.json`` (``teacher_cache``). A resumed run reuses the recorded choice instead of
   measuring again, so it continues the same trajectory.

Under torchrun rank 0 measures and decides and every rank follows its choice.
"""
from __future__ import annotations

import copy
import math
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from pand.engine.device import autocast, grad_scaler
from pand.engine.step import optimizer_step
from pand.engine.loaders import IndexedDataset
from pand.errors import ConfigError
from pand.models.teacher_source import LiveTeacher
from pand.utils.distributed import DistInfo, all_gather_object
from pand.utils.io import atomic_write_json, read_json

from .build import build_models, build_optim
from .criterion import NSDCriterion
from .teacher_cache.format import AUTO, _manifest_ok, teacher_cache_dir, teacher_cache_key, teacher_cache_meta
from .teacher_cache.lookup import TeacherFeatureCache

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import RunCfg

__all__ = ["AUTO", "AUTO_MAX_VIEWS", "MIN_GAIN", "CHOICE_FILE", "project_teacher_cache", "measure_step_costs",
           "auto_views", "resolve_views", "record_choice"]

AUTO_MAX_VIEWS = 8  # V = min(8, epochs) views when auto picks the cache
MIN_GAIN = 0.10  # the cache must be projected to save at least this fraction of the live end-to-end time
CHOICE_FILE = "teacher_cache_choice.json"


def auto_views(epochs: int) -> int:
    """The views an ``auto`` cache stores: ``min(8, epochs)``."""
    return max(1, min(AUTO_MAX_VIEWS, int(epochs)))


def _step(data_s: float, compute_s: float, workers: int) -> float:
    """Seconds of one step: loading after compute in one process, overlapped with ``workers`` DataLoader workers."""
    return max(data_s / workers, compute_s) if workers > 0 else data_s + compute_s


def project_teacher_cache(teacher_s: float, student_s: float, data_s: float, lookup_s: float, batch: int,
                          images: int, steps_per_epoch: int, epochs: int, views: int, workers: int = 0,
                          cache_built: bool = False, min_gain: float = MIN_GAIN) -> Dict[str, Any]:
    """Projected end-to-end seconds of Stage NSD training with the live teacher vs a ``views``-view cache.

    All costs are seconds per training batch of ``batch`` images on one process (rank)::

        live   = E * S * step(data_s, teacher_s + student_s)
        build  = ceil(V * N / batch) * step(data_s, teacher_s)          (0 when the cache is already built)
        cached = build + E * S * step(data_s, student_s + lookup_s)
        step(d, c) = d + c             without DataLoader workers
                   = max(d / W, c)     with W workers (loading overlaps compute)
        use_cache  = cached <= (1 - min_gain) * live

    ``E`` = ``epochs``, ``S`` = ``steps_per_epoch``, ``N`` = ``images`` (this rank's share), ``V`` = ``views``. The
    build is charged a full decode + augment per view (it decodes each image once, so this is an upper bound).
    Validation and test cost the same in both modes and are left out.

    Args:
        teacher_s: teacher forward of one batch.
        student_s: one student step (forward, loss, backward, optimiser step) of one batch.
        data_s: decoding + augmenting one batch in one process.
        lookup_s: reading one batch of features from the cache.
        batch: images per batch.
        images: training images this rank encodes for the cache.
        steps_per_epoch: training steps per epoch.
        epochs: ``nsd.epochs``.
        views: V of the candidate cache.
        workers: ``trainer.num_workers``.
        cache_built: a complete cache with this key exists already (no build).
        min_gain: the fraction of the live time the cache must save.

    Returns:
        ``{"use_cache", "live_s", "build_s", "cached_s", "speedup" (live / cached), "saving" (1 - cached / live),
        "reason"}``.
    """
    e, s, v = int(epochs), int(steps_per_epoch), int(views)
    live = e * s * _step(data_s, teacher_s + student_s, workers)
    build = 0.0 if cache_built else math.ceil(v * int(images) / max(1, int(batch))) * _step(data_s, teacher_s,
                                                                                              workers)
    cached = build + e * s * _step(data_s, student_s + lookup_s, workers)
    saving = 1.0 - cached / live if live > 0 else 0.0
    use = live > 0 and cached <= (1.0 - min_gain) * live
    how = (f"{saving:.0%} faster (>= {min_gain:.0%})" if use else
           f"only {saving:.0%} faster (< {min_gain:.0%})" if saving > 0 else f"{-saving:.0%} slower")
    reason = (f"the {v}-view cache is projected {how} end to end: {build:.3g} s build"
              f"{' (already built)' if cache_built else ''} + {cached - build:.3g} s training vs {live:.3g} s live")
    return {"use_cache": bool(use), "live_s": live, "build_s": build, "cached_s": cached,
            "speedup": live / cached if cached > 0 else float("inf"), "saving": saving, "reason": reason}


@contextmanager
def _rng_preserved(device: torch.device):
    """Restore torch (CPU and ``device``), python and numpy RNG states after the block."""
    py, nps = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(nps)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step_costs(cfg: RunCfg, source: Any, dataset: Any, device: torch.device, batch: int,
                       anchors: Optional[torch.Tensor] = None, num_classes: Optional[int] = None,
                       views: int = AUTO_MAX_VIEWS, batches: int = 3) -> Dict[str, float]:
    """Seconds per training batch of data loading, teacher forward, student step and cache lookup.

    One warm-up batch runs first and is not timed (kernel selection for the shape, the optimiser's state); then
    ``batches`` batches of ``batch`` images are timed and the fastest is kept (the least disturbed by other work on
    the machine). The student is a throw-away copy (``build_models`` with random init); every RNG state is restored
    afterwards, and nothing of the run (its source, dataset or configuration) is changed.

    Args:
        cfg: the run configuration (``student``, ``recipe``, ``nsd``, ``trainer`` are read).
        source: the :class:`~pand.models.teacher_source.LiveTeacher` of the run.
        dataset: the training dataset (augmenting transform attached).
        device: the training device.
        batch: images per batch (the per-device training batch).
        anchors: the ``[C, D_t]`` class anchors (random unit vectors when None: the cost is the same).
        num_classes: classes of the student's head (default: ``len(dataset.class_names)``).
        views: V of the stand-in cache table the lookup is timed on.
        batches: timed batches.

    Returns:
        ``{"data_s", "teacher_s", "student_s", "lookup_s", "batch"}``.
    """
    n = len(dataset)
    batch = max(1, min(int(batch), n))
    num_classes = int(num_classes if num_classes is not None else len(dataset.class_names))
    ds = IndexedDataset(dataset, int(cfg.trainer.seed))
    times: Dict[str, list] = {"data_s": [], "teacher_s": [], "student_s": [], "lookup_s": []}
    with _rng_preserved(device):
        student_cfg = copy.deepcopy(cfg.student)
        student_cfg.pretrained = False  # same compute, no weight loading
        model = build_models(student_cfg, cfg.recipe, num_classes, source.embed_dim, device,
                             bool(cfg.trainer.channels_last)).train()
        criterion = NSDCriterion.from_config(cfg.nsd, cfg.recipe)
        optimizer, _ = build_optim(cfg.nsd, model.parameters())
        scaler = grad_scaler(device, str(cfg.trainer.precision))
        dim = int(source.embed_dim)
        if anchors is None:
            anchors = F.normalize(torch.randn(num_classes, dim), dim=1)
        anchors = anchors.to(device).float()
        rows = min(n, 4096)  # an in-memory stand-in of the memory-mapped shards
        table = TeacherFeatureCache.in_memory(np.zeros((rows, views, dim), np.float16))
        fmt = torch.channels_last if device.type == "cuda" and cfg.trainer.channels_last else torch.contiguous_format
        for b in range(1 + int(batches)):
            idx = [(b * batch + k) % n for k in range(batch)]
            t0 = time.perf_counter()
            items = [ds[(i, 0)] for i in idx]
            images = torch.stack([x for x, _, _ in items])
            labels = torch.tensor([y for _, y, _ in items])
            t1 = time.perf_counter()
            images = images.to(device).contiguous(memory_format=fmt)
            labels, indices = labels.to(device), torch.tensor(idx)
            _sync(device)
            t2 = time.perf_counter()
            f_t = source.features(images, indices)
            _sync(device)
            t3 = time.perf_counter()
            with autocast(device, str(cfg.trainer.precision)):
                pred = model(images, f_t, anchors)
            total, _, _ = criterion(pred, labels, f_t, anchors, int(cfg.nsd.epochs) // 2)
            optimizer_step(total, optimizer, scaler, clip=float(cfg.nsd.grad_clip), params=model.parameters())
            _sync(device)
            t4 = time.perf_counter()
            rows_idx = [i % rows for i in idx]
            table.lookup(rows_idx, [k % views for k in range(batch)]).to(device)
            _sync(device)
            t5 = time.perf_counter()
            if b > 0:
                for k, v in zip(times, (t1 - t0, t3 - t2, t4 - t3, t5 - t4)):
                    times[k].append(v)
        del model, optimizer
    out = {k: float(min(v)) for k, v in times.items()}
    out["batch"] = batch
    return out


def _cache_built(cfg: RunCfg, source: Any, dataset: Any, views: int) -> bool:
    """Whether a complete cache with the key an ``auto`` cache of ``views`` views would use exists already."""
    try:
        tc = cfg.nsd.teacher_cache
        meta = teacher_cache_meta(source, dataset, int(cfg.trainer.seed), views, str(tc.dtype),
                                  int(tc.shard_size))
        return _manifest_ok(teacher_cache_dir(cfg.cache_dir, meta), teacher_cache_key(meta))
    except Exception:  # noqa: BLE001 - anything unusual: assume it has to be built
        return False


def _decide(cfg: RunCfg, source: Any, dataset: Any, dist: Any, device: torch.device,
            anchors: Optional[torch.Tensor], num_classes: Optional[int]) -> Dict[str, Any]:
    """Measure, project and choose (rank 0)."""
    epochs, views = int(cfg.nsd.epochs), auto_views(int(cfg.nsd.epochs))
    if not isinstance(source, LiveTeacher):
        return {"requested": AUTO, "mode": "as given", "views": 0,
                "reason": f"the teacher source is a {type(source).__name__}, not a LiveTeacher: nothing to cache"}
    if getattr(dataset, "samples", None) is None:
        return {"requested": AUTO, "mode": "live", "views": 0,
                "reason": f"the training dataset ({type(dataset).__name__}) has no 'samples' list to key a cache on"}
    world = max(1, int(getattr(dist, "world_size", 1)))
    per_device = max(1, int(cfg.nsd.batch_size) // world)
    n = len(dataset)
    rank_images = math.ceil(n / world)  # DistributedSampler pads every rank to this
    batch = min(per_device, rank_images)
    steps = rank_images // batch if rank_images >= per_device else 1  # make_train_loader's drop_last
    costs = measure_step_costs(cfg, source, dataset, device, batch, anchors, num_classes, views=views)
    built = _cache_built(cfg, source, dataset, views)
    workers = int(cfg.trainer.num_workers)
    proj = project_teacher_cache(costs["teacher_s"], costs["student_s"], costs["data_s"], costs["lookup_s"],
                                 batch, rank_images, steps, epochs, views, workers, built)
    return {"requested": AUTO, "mode": "cached" if proj["use_cache"] else "live",
            "views": views if proj["use_cache"] else 0, "candidate_views": views,
            "reason": proj["reason"], "measured": {**costs, "workers": workers},
            "projected": {k: proj[k] for k in ("live_s", "build_s", "cached_s", "speedup", "saving")},
            "epochs": epochs, "steps_per_epoch": steps, "images": rank_images, "cache_built": built,
            "min_gain": MIN_GAIN}


def resolve_views(cfg: RunCfg, source: Any, dataset: Any, dist: Any = None, device: Optional[torch.device] = None,
                  anchors: Optional[torch.Tensor] = None, out_dir: Optional[Path] = None,
                  resume: bool = False, num_classes: Optional[int] = None) -> Tuple[int, Dict[str, Any]]:
    """The views to cache (0 = live teacher) and the record of how they were chosen.

    An int ``nsd.teacher_cache.views`` is used as it is (``{"requested": V, "views": V, "mode": ...}``). ``auto``
    measures and projects (see the module docstring) on rank 0, unless ``resume`` finds the choice of the
    interrupted run in ``<out_dir>/teacher_cache_choice.json``, which is then reused (``"reused": true``). Every rank
    returns rank 0's choice; on rank 0 the choice is printed.

    Raises:
        ConfigError: a value that is neither an int >= 0 nor ``auto``.
    """
    value = cfg.nsd.teacher_cache.views
    if value != AUTO:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"bad value for 'nsd.teacher_cache.views': {value!r}; use an int >= 0 (0 = live "
                              f"teacher, 8-16 recommended) or 'auto'")
        return int(value), {"requested": int(value), "views": int(value), "mode": "cached" if value else "live"}
    dist = dist or DistInfo()
    device = device or getattr(getattr(source, "teacher", None), "device", None) or torch.device("cpu")
    choice = None
    if dist.is_main:
        path = Path(out_dir) / CHOICE_FILE if out_dir is not None else None
        if resume and path is not None and path.is_file():
            choice = {**read_json(path), "reused": True}
        else:
            choice = _decide(cfg, source, dataset, dist, device, anchors, num_classes)
        m = choice.get("measured")
        numbers = (f" [per batch of {m['batch']}: teacher {m['teacher_s'] * 1e3:.1f} ms, student step "
                   f"{m['student_s'] * 1e3:.1f} ms, data {m['data_s'] * 1e3:.1f} ms, lookup "
                   f"{m['lookup_s'] * 1e3:.2f} ms]" if m else "")
        again = " (the choice of the interrupted run)" if choice.get("reused") else ""
        print(f"nsd.teacher_cache.views=auto: {choice['mode']} teacher"
              f"{' with ' + str(choice['views']) + ' cached views' if choice['views'] else ''}{again}: "
              f"{choice['reason']}{numbers}", flush=True)
    if dist.distributed:
        choice = all_gather_object(choice, dist)[0]
    return int(choice["views"]), choice


def record_choice(choice: Optional[Dict[str, Any]], out_dir: Path, logger: Any, start_epoch: int) -> None:
    """Write an ``auto`` choice to ``<out_dir>/teacher_cache_choice.json`` and, at the start of a run, to
    ``metrics.jsonl`` (``kind: teacher_cache``). Call on rank 0 after the run directory was accepted."""
    if not choice or choice.get("requested") != AUTO:
        return
    atomic_write_json(Path(out_dir) / CHOICE_FILE, {k: v for k, v in choice.items() if k != "reused"})
    if start_epoch == 0 and logger is not None:
        logger.log({"kind": "teacher_cache", "epoch": 0, **choice})
