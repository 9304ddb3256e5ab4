"""Save and resume training state: per-epoch checkpoints, RNG states, the resume-time configuration check and the
one safe loader of torch files. Loops use them through the run lifecycle (:mod:`pand.engine.lifecycle`).

Layout of a checkpoint directory (Stage NSD: ``<run>/nsd/checkpoints/``; PromptKD: ``<run>/promptkd/checkpoints/``;
Stage PSC: ``<run>/psc/checkpoints/``)::

    epoch_0003/model.safetensors   weights (prefixed, e.g. ``student.*``, ``heads.*``); metadata: config, epoch
    epoch_0003/state.pt            optimiser, scheduler, grad scaler, RNG states, epoch, best-so-far (torch.save)
    last.json                      {"epoch": 3, "dir": "epoch_0003", "best_epoch": 1, "best_dir": "epoch_0001"}

An epoch directory is written under a temporary name and renamed into place, then ``last.json`` is
replaced, so a crash at any point leaves the previous checkpoint intact and referenced. Older epoch
directories are pruned, except the best validation epoch's, whose weights are the run's result. ``state.pt`` holds
only tensors, numbers, strings and containers and is read with :func:`safe_torch_load` (``weights_only=True``).
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch

from pand.errors import ArtifactError
from pand.utils.flatten import flatten_config, key_under
from pand.utils.io import WriteError, atomic_write_json, is_write_failure, load_tensors, read_json, save_tensors

__all__ = [
    "RESUME_IGNORED_KEYS", "safe_torch_load", "capture_rng", "restore_rng", "save_checkpoint", "load_last_checkpoint", "has_checkpoint", "best_weights_path",
    "refuse_overwrite", "checkpoint_config", "flatten_config", "config_diff", "check_resume_config", "split_prefixed",
]


def safe_torch_load(path: str | Path, what: str, fix: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings and containers only, never code.

    Args:
        path: a file written by ``torch.save``.
        what: what the file is, for the message (e.g. ``student.weights file``).
        fix: the way out, appended to the message.
        map_location: where tensors are loaded.

    Raises:
        ArtifactError: the file is empty, truncated, not a torch file, or pickles other objects. The message never
            repeats torch's own text, which suggests an unsafe load (``weights_only=False``).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - never echo torch's text: it suggests an unsafe load
        raise ArtifactError(
            f"{what} {path} cannot be read safely ({type(e).__name__}): it is empty, truncated, not a torch file, or "
            f"a pickle-based file holding objects other than tensors and plain values, which pand never loads. {fix}"
        ) from None


# Settings that may change between a run and its resumption without changing the result.
RESUME_IGNORED_KEYS = (
    "name", "run_dir", "cache_dir", "data.root", "trainer.num_workers", "trainer.pin_memory",
    "trainer.persistent_workers", "trainer.log_every", "trainer.tensorboard", "teacher.batch_size",
)


def capture_rng() -> Dict[str, Any]:
    """RNG states of torch (CPU and every CUDA device), python ``random`` and numpy, in weights_only-safe types."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(py_state), py_gauss],
        "numpy": [name, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_diff(old: Mapping, new: Mapping, ignore: Iterable[str] = RESUME_IGNORED_KEYS) -> List[Tuple[str, Any, Any]]:
    """``[(key, old, new)]`` for every dotted key whose value differs (keys under ``ignore`` skipped).

    A key absent from ``old`` and null in ``new`` is no difference: it is a setting added to the schema after ``old``
    was written, left unset, and an unset optional setting keeps the behaviour from before it existed (e.g.
    ``student.bn_momentum``)."""
    a, b = flatten_config(old), flatten_config(new)
    skip = tuple(ignore)
    return [(k, a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b))
            if not key_under(k, skip) and a.get(k, "<absent>") != b.get(k, "<absent>")
            and not (k not in a and b[k] is None)]


def check_resume_config(saved: Mapping, current: Mapping, where: Path, label: str = "checkpoint") -> None:
    """Refuse to resume a checkpoint written under a different configuration.

    Args:
        saved: the stored configuration (of the checkpoint, or the run's ``config.yaml``).
        current: the configuration of this invocation.
        where: the file or directory ``saved`` was read from (named in the message).
        label: what ``saved`` is, in the message (``checkpoint=... now=...``).

    Raises:
        ArtifactError: listing each differing key with its saved and current value.
    """
    diff = config_diff(saved, current)
    if diff:
        lines = "\n".join(f"  {k}: {label}={o!r} now={n!r}" for k, o, n in diff[:30])
        more = f"\n  ... and {len(diff) - 30} more" if len(diff) > 30 else ""
        raise ArtifactError(
            f"cannot resume from {where}: the configuration differs in {len(diff)} key(s):\n{lines}{more}\n"
            f"Resume with the original settings, or start a new run with another --run-dir."
        )


def split_prefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def _epoch_dir(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def save_checkpoint(root: Path, epoch: int, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any],
                    config: Mapping, best_epoch: int, keep: int = 1) -> Path:
    """Write the checkpoint of a finished ``epoch`` (0-based) and make it the one to resume from.

    Args:
        root: the checkpoints directory.
        epoch: the epoch just completed.
        tensors: model weights (``student.*``, ``heads.*``).
        state: optimiser/scheduler/scaler/RNG/bookkeeping (torch.save-able with weights_only-safe types).
        config: the resolved run configuration (a plain dict), stored for the resume check.
        best_epoch: the best validation epoch so far (its directory is never pruned); may equal ``epoch``.
        keep: how many of the latest epoch directories to keep besides the best one.

    Returns:
        The epoch directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / _epoch_dir(epoch)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        try:
            tmp.mkdir()
        except OSError as e:
            raise WriteError.of(tmp, e) from None
        save_tensors(tmp / "model.safetensors", tensors, {"epoch": epoch, "config": config})
        try:
            torch.save(dict(state), tmp / "state.pt")
        except Exception as e:  # noqa: BLE001 - a full disk: "basic_ios::clear: iostream error"
            if is_write_failure(e):
                raise WriteError.of(final / "state.pt", e) from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written epoch directory behind
        raise
    if final.exists():  # left by a crash between the rename and last.json: not referenced, replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    best = _epoch_dir(best_epoch)
    atomic_write_json(root / "last.json", {"epoch": epoch, "dir": final.name, "best_epoch": best_epoch,
                                           "best_dir": best})
    others = sorted(p for p in root.glob("epoch_*") if p.is_dir() and p.name not in (final.name, best))
    for p in others[: max(0, len(others) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def best_weights_path(root: Path) -> Path:
    """``model.safetensors`` of the best epoch recorded in ``last.json``.

    Raises:
        ArtifactError: no checkpoint yet.
    """
    root = Path(root)
    if not has_checkpoint(root):
        raise ArtifactError(f"no checkpoint in {root}; train first")
    ptr = read_json(root / "last.json")
    return root / ptr.get("best_dir", ptr["dir"]) / "model.safetensors"


def checkpoint_config(root: Path) -> Optional[Tuple[Dict[str, Any], Path]]:
    """``(config, epoch_dir)``: the configuration stored in the last checkpoint's metadata (None: no checkpoint).

    Only the safetensors header is read.

    Raises:
        ArtifactError: ``last.json`` points at a missing or unreadable checkpoint.
    """
    from safetensors import safe_open

    root = Path(root)
    if not has_checkpoint(root):
        return None

    def config_of(d: Path) -> Dict[str, Any]:
        with safe_open(str(d / "model.safetensors"), framework="pt") as f:
            return json.loads((f.metadata() or {})["config"])

    return _read_last(root, config_of)


def _read_last(root: Path, read):
    """``(read(epoch_dir), epoch_dir)`` for the checkpoint ``last.json`` points at; any damage is an ArtifactError."""
    try:
        d = root / read_json(root / "last.json")["dir"]
        return read(d), d
    except Exception as e:  # noqa: BLE001 - safetensors and json raise their own error types
        raise ArtifactError(f"checkpoint in {root} is unreadable ({type(e).__name__}: {e}); delete {root.parent} "
                            f"to start over") from None


def has_checkpoint(root: Path) -> bool:
    """Whether ``root`` holds a checkpoint to resume (its ``last.json`` exists)."""
    return (Path(root) / "last.json").is_file()


def refuse_overwrite(root: Path, resume: bool, run_dir: Path) -> None:
    """A fresh run (no ``--resume``) must not start over an existing checkpoint.

    Raises:
        ArtifactError: naming the directory and the two ways out.
    """
    if not resume and has_checkpoint(root):
        raise ArtifactError(f"{run_dir} already holds a trained run ({root}); pass --resume to continue it or "
                            f"choose another --run-dir (nothing was overwritten)")


def load_last_checkpoint(root: Path, map_location: str | torch.device = "cpu"
                         ) -> Optional[Tuple[Dict[str, torch.Tensor], Dict[str, Any], Dict[str, Any], Path]]:
    """``(tensors, metadata, state, epoch_dir)`` of the checkpoint ``last.json`` points at, or None.

    Raises:
        ArtifactError: ``last.json`` points at a missing or unreadable checkpoint.
    """
    root = Path(root)
    if not has_checkpoint(root):
        return None
    (tensors, meta), d = _read_last(root, lambda d: load_tensors(d / "model.safetensors"))
    state = safe_torch_load(d / "state.pt", "training state", f"Delete {root.parent} to start over, or restore the "
                            f"file from the run that wrote it.", map_location=map_location)
    if not isinstance(state, dict):
        raise ArtifactError(f"{d / 'state.pt'} holds a {type(state).__name__}, not a pand training state; delete "
                            f"{root.parent} to start over")
    return tensors, meta, state, d
