"""Process-group set-up for one process per device, launched by ``torchrun`` (or run as one process).

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them
this is a single process and no process group is created. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from oanet.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` = this process's GPU when CUDA is available, else the CPU; ``cuda`` picks the local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available (use device=cpu or auto)")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")


def init_distributed(device_name: str = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group torchrun prepared (no-op for a single process) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        # Before the process group: NCCL binds each rank's communicator to the current device.
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(
            backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs
        )
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a copy; the input is untouched). NaN on any rank stays NaN."""
    tensor = tensor.detach().clone()
    if get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= get_world_size()
    return tensor


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` as a list indexed by rank (picklable objects; used for RNG states)."""
    if get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def once_per_node(make: Callable[[], T], ctx: DistContext, sync: Callable[[], None] = barrier) -> T:
    """``make()`` on every rank, in three turns with a barrier after each: rank 0, then the first rank of
    every other node, then the rest.

    For work that leaves a file the next turn reuses, such as the annotation cache: the first turn does
    the work, and on a file system the nodes share the second turn finds its file; on node-local disks
    each node does it once. A turn's exception is raised after the last barrier, so no rank waits forever
    for one that failed (the ranks after it try again and fail the same way).
    """
    turn = 0 if ctx.rank == 0 else 1 if ctx.local_rank == 0 else 2
    result, error = None, None
    for current in range(3):
        if current == turn:
            try:
                result = make()
            except Exception as exc:  # re-raised below, once every rank has passed every barrier
                error = exc
        sync()
    if error is not None:
        raise error
    return result
