"""torchrun helpers: join the process group torchrun describes; every function is a no-op without it."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """(rank, world size): from torchrun's environment (joining its process group), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def mean_over_ranks(value: torch.Tensor, world: int) -> float:
    """A scalar averaged over all ranks (for logging; gradients are averaged by DDP)."""
    if world == 1:
        return value.item()
    value = value.detach().clone()
    dist.all_reduce(value)
    return value.item() / world
