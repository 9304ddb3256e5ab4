"""Teacher image-feature cache for Stage PSC (docs/method.md, "Feature cache").

Every image of a split goes once through the frozen teacher with the teacher's OWN eval preprocessing
(``create_transform(teacher.preprocess_spec, is_train=False)``: resize, center crop, normalise, as open_clip's own
eval transform ``teacher.preprocess`` does, pixel for pixel; no augmentation, also for train), under no_grad
(autocast on CUDA with ``teacher.precision=amp``). The L2-normalised features ``[N, D_t]`` (fp32) and labels
``[N]`` (int64) are written once as safetensors with their metadata (teacher identity, dataset name, split,
transform description, count, sample-list hash, content fingerprint). The cache key is the sha256 of all of them
(plus the caller's ``key_extra``): a later call with the same key reads the file back, any change (another teacher,
another transform, other samples, an image file rewritten in place) writes a new file.

**Content.** :func:`pand.utils.digest.content_hash` digests the bytes of every image file (BLAKE2b, read once per process and
memoised on inode, size, mtime and ctime: :mod:`pand.utils.digest`), so an image whose content changes gets new
features even when its size and modification time are restored.
**Integrity.** The file stores the sha256 of its features and labels; on load the checksum, the shapes, the labels
(equal to the dataset's) and finiteness are verified, and a file failing any of them is recomputed with a warning.
Freshly computed features that are NaN/inf stop with an error naming the images.
**Locking.** While an entry is computed, ``<file>.lock`` is held (:mod:`pand.utils.lock`): a second process asking
for the same entry is refused, naming the holder's pid.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from pand.data.transforms import create_transform
from pand.errors import PandError
from pand.utils.digest import content_hash, describe_transform, mapping_sha256, samples_hash, tensor_sha256
from pand.utils.io import load_tensors, save_tensors
from pand.utils.lock import exclusive_lock

__all__ = ["feature_cache_key", "feature_cache_path", "extract_features"]

def _cache_meta(teacher: Any, dataset: Any, key_extra: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    extra = {str(k): v for k, v in (key_extra or {}).items()}
    return {
        "teacher_identity": teacher.identity,
        "embed_dim": int(teacher.embed_dim),
        "precision": teacher.precision,
        "dataset": str(getattr(dataset, "name", "")),
        "split": str(extra.get("split", "")),
        "transform": describe_transform(create_transform(teacher.preprocess_spec, is_train=False)),
        "count": len(dataset),
        "samples_hash": samples_hash(dataset),
        "content_hash": content_hash(dataset),
        "key_extra": extra,
    }


def feature_cache_key(meta: Mapping[str, Any]) -> str:
    """sha256 of the cache metadata (sorted JSON): :func:`pand.utils.digest.mapping_sha256`."""
    return mapping_sha256(meta)


def feature_cache_path(cache_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    """``<cache_dir>/<dataset>-<split>-<key[:32]>.safetensors``."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{meta.get('dataset') or 'data'}-{meta.get('split') or 'split'}")[:64]
    return Path(cache_dir) / f"{label}-{feature_cache_key(meta)[:32]}.safetensors"


def _read_cache(path: Path, key: str, count: int, embed_dim: int, targets: Optional[list] = None
                ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    try:
        tensors, meta = load_tensors(path)
        feats, labels = tensors["features"], tensors["labels"]
    except Exception as e:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
        warnings.warn(f"feature cache {path} is unreadable ({type(e).__name__}: {e}); recomputing")
        return None
    if meta.get("key") != key or tuple(feats.shape) != (count, embed_dim) or tuple(labels.shape) != (count,):
        warnings.warn(f"feature cache {path} does not match its key or shape; recomputing")
        return None
    if meta.get("sha256") != tensor_sha256(feats, labels):
        warnings.warn(f"feature cache {path} fails its checksum (changed after it was written); recomputing")
        return None
    if targets is not None and labels.tolist() != list(targets):
        warnings.warn(f"feature cache {path} has labels in another order than the dataset; recomputing")
        return None
    if not bool(torch.isfinite(feats).all()):
        warnings.warn(f"feature cache {path} holds NaN/inf features; recomputing")
        return None
    return feats.float(), labels.long()


def _check_finite(feats: torch.Tensor, dataset: Any, what: str) -> None:
    bad = (~torch.isfinite(feats)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        samples = getattr(dataset, "samples", None)
        names = [str(samples[i][0]) if samples else f"#{i}" for i in bad[:5]]
        raise PandError(
            f"{what}: the teacher produced NaN/inf features for {len(bad)} image(s), e.g. {', '.join(names)}. Check "
            f"those files (or the teacher weights / teacher.precision); nothing was cached."
        )


def extract_features(
    teacher: Any,
    dataset: Any,
    cache_dir: str | Path,
    key_extra: Optional[Mapping[str, Any]] = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Teacher features of every image of ``dataset``, cached on disk.

    Args:
        teacher: a :class:`pand.models.teacher.Teacher` (``identity``, ``preprocess_spec``, ``encode_image``).
        dataset: an :class:`pand.data.FGVCDataset` (its own transform is replaced by the teacher's eval transform,
            ``create_transform(teacher.preprocess_spec, is_train=False)``).
        cache_dir: directory of the cache files (created when missing).
        key_extra: more JSON-able key parts, e.g. ``{"split": "train", "data": "cub_200_2011"}``.
        batch_size: extraction batch.
        num_workers: DataLoader workers.
        progress: show a tqdm bar.

    Returns:
        ``(features [N, D_t] float32 L2-normalised, labels [N] int64)`` on the CPU, in dataset order.
    """
    if not hasattr(dataset, "with_transform"):
        raise PandError(f"extract_features needs an FGVCDataset (with_transform), got {type(dataset).__name__}")
    meta = _cache_meta(teacher, dataset, key_extra)
    key = feature_cache_key(meta)
    path = feature_cache_path(cache_dir, meta)
    N, D = len(dataset), int(teacher.embed_dim)
    targets = getattr(dataset, "targets", None)
    if path.is_file():
        hit = _read_cache(path, key, N, D, targets)
        if hit is not None:
            return hit
    desc = f"teacher features {meta['dataset'] or 'data'}/{meta['split'] or '?'}"
    with exclusive_lock(path.with_name(path.name + ".lock"), f"feature cache entry {path}",
                        "it is being computed by that process: rerun when it has finished, or set cache_dir to "
                        "another folder"):
        if path.is_file():  # written by another process since the check above: reuse it
            hit = _read_cache(path, key, N, D, targets)
            if hit is not None:
                return hit
        transform = create_transform(teacher.preprocess_spec, is_train=False)  # the key's "transform"
        feats, labels = _run_teacher(teacher, dataset.with_transform(transform), batch_size, num_workers,
                                     progress, desc=desc)
        _check_finite(feats, dataset, desc)
        save_tensors(path, {"features": feats, "labels": labels},
                     {**meta, "key": key, "sha256": tensor_sha256(feats, labels)})
    return feats, labels


def _run_teacher(teacher: Any, dataset: Any, batch_size: int, num_workers: int, progress: bool, desc: str
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    N = len(dataset)
    if N == 0:
        return torch.empty(0, int(teacher.embed_dim)), torch.empty(0, dtype=torch.long)
    on_cuda = teacher.device.type == "cuda"
    loader = DataLoader(dataset, batch_size=max(1, int(batch_size)), shuffle=False, num_workers=int(num_workers),
                        pin_memory=on_cuda, drop_last=False)
    feats, labels = [], []
    with tqdm(total=N, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for x, y in loader:
            feats.append(teacher.encode_image(x).float().cpu())
            labels.append(torch.as_tensor(y, dtype=torch.long).reshape(-1))
            bar.update(len(labels[-1]))
    out = torch.cat(feats)
    if out.shape[0] != N:  # pragma: no cover - DataLoader with drop_last=False never drops
        raise PandError(f"feature extraction produced {out.shape[0]} rows for {N} images")
    return out, torch.cat(labels)
