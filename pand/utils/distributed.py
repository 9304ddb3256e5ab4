"""torch.distributed helpers for runs launched by torchrun (``trainer.devices > 1``).

A run is distributed when the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) is present.
:func:`init_distributed` then starts the process group (NCCL on CUDA, gloo on CPU unless
``trainer.backend`` says otherwise); without that environment every helper is a no-op for one process.

Multi-node runs (one torchrun agent per node, c10d rendezvous) go through the same path. Joining the process group
is bounded by ``PAND_INIT_TIMEOUT_S`` (default 900 s) and fails with a :class:`~pand.errors.PandError` naming
``MASTER_ADDR:MASTER_PORT``; :func:`check_ranks_agree` then stops every rank when the nodes run different
configurations or different pand code.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

import pand
from pand.errors import PandError
from pand.utils.flatten import flatten_config, key_under
from pand.utils.io import atomic_write_text

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import RunCfg

__all__ = ["DistInfo", "dist_env", "init_distributed", "cleanup_distributed", "select_device", "all_reduce_sum",
           "barrier", "broadcast_buffers", "all_gather_object", "code_version", "run_fingerprint",
           "compare_fingerprints", "check_ranks_agree", "check_shared_dir", "INIT_TIMEOUT_ENV", "NODE_LOCAL_KEYS"]

INIT_TIMEOUT_ENV = "PAND_INIT_TIMEOUT_S"
DEFAULT_INIT_TIMEOUT_S = 900
# configuration keys that may legitimately differ between nodes (a node-local cache directory)
NODE_LOCAL_KEYS = ("cache_dir",)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on this node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module started the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_env() -> Optional[tuple[int, int, int]]:
    """``(rank, world_size, local_rank)`` from the torchrun environment, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    return rank, int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", rank))


def select_device(accelerator: str = "auto", local_rank: int = 0):
    """``cuda:<local_rank>`` when CUDA is wanted (``cuda``) or available (``auto``), else ``cpu``.

    Raises:
        PandError: ``accelerator=cuda`` on a machine without a usable CUDA device.
    """
    import torch

    if accelerator == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if accelerator == "cuda":
        raise PandError("trainer.accelerator=cuda but no CUDA device is available; use trainer=cpu or accelerator=auto")
    return torch.device("cpu")


def _init_timeout_s() -> float:
    raw = os.environ.get(INIT_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else float(DEFAULT_INIT_TIMEOUT_S)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise PandError(f"{INIT_TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return value


def init_distributed(device_type: str, backend: Optional[str] = None, timeout_min: int = 180,
                     init_timeout_s: Optional[float] = None) -> DistInfo:
    """Join the torchrun process group when launched by torchrun; otherwise a single-process :class:`DistInfo`.

    Args:
        device_type: ``cuda`` (NCCL by default) or ``cpu`` (gloo).
        backend: ``trainer.backend`` (overrides the default).
        timeout_min: collective timeout (generous: Stage PSC runs on rank 0 while the others wait at a barrier).
        init_timeout_s: how long to wait for every rank to reach the store at ``MASTER_ADDR:MASTER_PORT``
            (default ``$PAND_INIT_TIMEOUT_S`` or 900 s).

    Raises:
        PandError: the process group could not be joined in time (names ``MASTER_ADDR:MASTER_PORT`` and what to
            check).
    """
    env = dist_env()
    if env is None:
        return DistInfo()
    rank, world, local = env
    if world <= 1:
        return DistInfo(rank, world, local)
    import torch.distributed as dist
    from torch.distributed.rendezvous import rendezvous

    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, owns_group=False)
    wait = float(init_timeout_s) if init_timeout_s is not None else _init_timeout_s()
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        # what init_method="env://" does, with its own (short) timeout for joining; collectives get timeout_min
        store, rank, world = next(rendezvous("env://", rank, world, timeout=timedelta(seconds=wait)))
    except (RuntimeError, ValueError, TimeoutError, OSError) as e:
        raise PandError(
            f"rank {rank} of {world} on {socket.gethostname()} could not join the process group at {where} within "
            f"{wait:g} s ({type(e).__name__}: {str(e).strip().splitlines()[0].rstrip('.') if str(e).strip() else ''}). Check "
            f"that every node was started with the same --nnodes/--nproc-per-node and rendezvous endpoint, that "
            f"{where} is reachable from every node (host name resolves, port open in the firewall, not in use), "
            f"and that no node crashed before joining; {INIT_TIMEOUT_ENV} sets this timeout"
        ) from None
    store.set_timeout(timedelta(minutes=timeout_min))
    dist.init_process_group(backend=backend or ("nccl" if device_type == "cuda" else "gloo"),
                            store=dist.PrefixStore("default_pg", store), rank=rank, world_size=world,
                            timeout=timedelta(minutes=timeout_min))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, owns_group=True)


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _active(info: DistInfo) -> bool:
    if not info.distributed:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor, info: DistInfo):
    """Sum ``tensor`` over ranks in place (no-op for one process); returns it."""
    if _active(info):
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    """Wait for every rank (NCCL: on this process's current CUDA device)."""
    if _active(info):
        import torch
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_buffers(module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank, in place."""
    if _active(info):
        import torch.distributed as dist

        for b in module.buffers():
            dist.broadcast(b.data, src=src)


def all_gather_object(obj: Any, info: DistInfo) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` for one process)."""
    if not _active(info):
        return [obj]
    import torch.distributed as dist

    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------------------------------------------
# do all ranks run the same thing?
# --------------------------------------------------------------------------------------------------------------
def _source_hash(package_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(package_dir.rglob("*.py")):
        h.update(p.relative_to(package_dir).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _git_describe(repo: Path) -> Optional[str]:
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty", "--tags"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def code_version() -> Dict[str, Optional[str]]:
    """The code this process runs: ``pand`` version, a hash of the package's ``.py`` sources, ``git describe``.

    The source hash is what is compared between ranks (it catches uncommitted edits on one node); ``git`` (None
    outside a git checkout) only makes the message readable.
    """
    package = Path(pand.__file__).resolve().parent
    return {"pand": str(pand.__version__), "source": _source_hash(package), "git": _git_describe(package.parent)}


def run_fingerprint(cfg: Union[RunCfg, Mapping[str, Any]], stage: str = "all", resume: bool = False) -> Dict[str, Any]:
    """What must be equal on every rank: the resolved configuration (less :data:`NODE_LOCAL_KEYS`), its hash, the
    stage/resume flags and :func:`code_version`; plus the host name and rank for the message."""
    if not isinstance(cfg, Mapping):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat = {k: v for k, v in flatten_config(cfg).items() if not key_under(k, NODE_LOCAL_KEYS)}
    flat["<stage>"], flat["<resume>"] = str(stage), bool(resume)
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"config_hash": digest, "config": flat, "code": code_version(), "host": socket.gethostname(),
            "rank": int(os.environ.get("RANK", 0))}


def compare_fingerprints(fps: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """None when every rank's :func:`run_fingerprint` matches rank 0's, else a message naming each difference."""
    ref = fps[0]
    problems: List[str] = []
    for r, fp in enumerate(fps[1:], start=1):
        who = f"rank {r} ({fp.get('host')})"
        ref_who = f"rank 0 ({ref.get('host')})"
        a, b = ref["code"], fp["code"]
        if a["pand"] != b["pand"] or a["source"] != b["source"]:
            problems.append(f"{who} runs different pand code than {ref_who}: pand {b['pand']} source {b['source']} "
                            f"git {b.get('git')} vs pand {a['pand']} source {a['source']} git {a.get('git')}")
        if fp["config_hash"] != ref["config_hash"]:
            ca, cb = ref["config"], fp["config"]
            keys = [k for k in sorted(set(ca) | set(cb)) if ca.get(k, "<absent>") != cb.get(k, "<absent>")]
            diff = ", ".join(f"{k}={cb.get(k, '<absent>')!r} (rank 0: {ca.get(k, '<absent>')!r})" for k in keys[:10])
            more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
            problems.append(f"{who} has config hash {fp['config_hash']}, {ref_who} {ref['config_hash']}: {diff}{more}")
    if not problems:
        return None
    return ("the ranks of this distributed run disagree, so every rank stops:\n  " + "\n  ".join(problems) +
            "\nStart every node with the same pand checkout (or installed version), the same CONFIG file and the same "
            "overrides; only " + ", ".join(NODE_LOCAL_KEYS) + " may differ between nodes.")


def check_ranks_agree(fingerprint: Mapping[str, Any], info: DistInfo) -> None:
    """Gather every rank's fingerprint and raise the same :class:`~pand.errors.PandError` on every rank when any
    differs from rank 0's (a no-op for one process)."""
    msg = compare_fingerprints(all_gather_object(dict(fingerprint), info))
    if msg:
        raise PandError(msg)


def check_shared_dir(path: str | os.PathLike, info: DistInfo, what: str = "run directory",
                     wait_s: float = 10.0) -> None:
    """Check that every rank sees the same directory ``path`` (a filesystem shared by all nodes).

    Rank 0 writes a marker file with a fresh token, every rank looks for it (polling up to ``wait_s`` seconds: a
    network filesystem may show a new file late), and all ranks raise the same :class:`~pand.errors.PandError`
    naming the ranks and hosts that did not see it. A no-op for one process.
    """
    if not _active(info):
        return
    token, main_path = all_gather_object((uuid.uuid4().hex, str(path)), info)[0]
    marker = Path(path) / f".pand-shared-{token}"
    if info.is_main:
        atomic_write_text(marker, token)
    barrier(info)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            seen = marker.read_text() == token
        except OSError:
            seen = False
        if seen or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    views = all_gather_object((seen, socket.gethostname(), str(path)), info)
    if info.is_main:
        marker.unlink(missing_ok=True)
    blind = [f"rank {r} ({host}: {p})" for r, (ok, host, p) in enumerate(views) if not ok]
    if blind:
        raise PandError(
            f"the {what} {main_path} is not shared between the nodes: {', '.join(blind)} do not see the file rank 0 "
            f"({views[0][1]}) wrote there. Every rank reads what rank 0 writes into it (Stage PSC anchors, "
            f"checkpoints on --resume): put it on a filesystem every node mounts at the same path (NFS, Lustre, ...) "
            f"and pass the same --run-dir on every node"
        )
