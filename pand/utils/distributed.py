"""torch.distributed helpers for runs launched by torchrun (``trainer.devices > 1``).

A run is distributed when the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) is present.
:func:`init_distributed` then starts the process group (NCCL on CUDA, gloo on CPU unless
``trainer.backend`` says otherwise); without that environment every helper is a no-op for one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

__all__ = ["DistInfo", "dist_env", "init_distributed", "cleanup_distributed", "select_device", "all_reduce_sum",
           "barrier", "broadcast_buffers"]


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

    from pand.errors import PandError

    if accelerator == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if accelerator == "cuda":
        raise PandError("trainer.accelerator=cuda but no CUDA device is available; use trainer=cpu or accelerator=auto")
    return torch.device("cpu")


def init_distributed(device_type: str, backend: Optional[str] = None, timeout_min: int = 180) -> DistInfo:
    """Join the torchrun process group when launched by torchrun; otherwise a single-process :class:`DistInfo`."""
    env = dist_env()
    if env is None:
        return DistInfo()
    rank, world, local = env
    if world <= 1:
        return DistInfo(rank, world, local)
    import torch.distributed as dist

    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, owns_group=False)
    # generous timeout: Stage PSC (feature extraction + CoOp) runs on rank 0 while the others wait at a barrier
    dist.init_process_group(backend=backend or ("nccl" if device_type == "cuda" else "gloo"), init_method="env://",
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
