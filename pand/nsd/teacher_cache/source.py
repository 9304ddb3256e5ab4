"""The engine's hook (:func:`maybe_cache_teacher`): the teacher source a run trains with, live or cached."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from pand.errors import ConfigError, PandError
from pand.models.teacher_source import LiveTeacher
from pand.utils.distributed import DistInfo

from .build import build_teacher_cache
from .format import AUTO
from .lookup import CachedTeacher

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import RunCfg

__all__ = ["maybe_cache_teacher"]


def maybe_cache_teacher(cfg: RunCfg, source: Any, dataset: Any, dist: Any = None, progress: bool = True,
                        views: Optional[int] = None) -> Any:
    """Swap a :class:`LiveTeacher` for a :class:`CachedTeacher` when the run caches ``views > 0`` views.

    Every rank builds its share of the cache under ``<cache_dir>/nsd_teacher/`` (or reuses it; see
    :func:`build_teacher_cache`) and then opens it read-only. Returns ``source`` unchanged when the cache is off, there
    is no teacher, or ``source`` is already cached.

    Args:
        cfg: run configuration (``nsd.teacher_cache``, ``trainer.seed``, ``trainer.num_workers``,
            ``teacher.batch_size``, ``cache_dir``).
        source: the teacher source the caller built.
        dataset: the training dataset (augmenting transform attached) the train loader wraps.
        dist: :class:`pand.utils.distributed.DistInfo` (default: one process).
        progress: tqdm bar on rank 0.
        views: the views to cache; None: ``nsd.teacher_cache.views``. ``auto`` is decided (measured, recorded) by
            :func:`pand.nsd.teacher_cache_auto.resolve_views`, whose views the engine passes here.

    Raises:
        ConfigError: the views are neither an int >= 0 nor, unresolved, ``auto``.
        PandError: a cache is asked for but ``source`` is neither live nor cached.
    """
    tc = cfg.nsd.teacher_cache
    views = tc.views if views is None else views
    if views == AUTO:
        raise ConfigError("nsd.teacher_cache.views=auto is decided by pand.nsd.teacher_cache_auto.resolve_views "
                          "(Stage NSD calls it); pass the views it returns as views=")
    if isinstance(views, bool) or not isinstance(views, int) or views < 0:
        raise ConfigError(f"nsd.teacher_cache.views={views!r} must be an int >= 0 (0 = live teacher, 8-16 "
                          f"recommended) or 'auto'")
    if source is None or views <= 0 or isinstance(source, CachedTeacher):
        return source
    if not isinstance(source, LiveTeacher):
        raise PandError(f"nsd.teacher_cache.views={views} caches a LiveTeacher, got {type(source).__name__}; set "
                        f"nsd.teacher_cache.views=0 to use this source as it is")
    dist = dist or DistInfo()
    root = build_teacher_cache(source, dataset, cfg.cache_dir, seed=int(cfg.trainer.seed), views=views,
                               shard_size=int(tc.shard_size), dtype=str(tc.dtype),
                               batch_size=int(cfg.teacher.batch_size), num_workers=int(cfg.trainer.num_workers),
                               progress=progress and dist.is_main, dist=dist)
    return CachedTeacher(root)
