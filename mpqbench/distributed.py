"""Data-parallel training under ``torchrun`` (torch.distributed + DistributedDataParallel).

``torchrun --nproc_per_node N -m mpqbench qat ...`` sets ``WORLD_SIZE`` / ``RANK``; ``init``
joins the process group (NCCL on CUDA, gloo on the CPU). Every rank draws the same seeded
global batch and trains on its slice (``rank::world``), DDP averages the gradients, and rank 0
alone writes files. With ``WORLD_SIZE`` unset or 1 nothing here does anything.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init() -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns (rank, world size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank_and_world()


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def local_slice(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of a global batch: every ``world``-th example from ``rank``."""
    rank, world = rank_and_world()
    return (x, y) if world == 1 else (x[rank::world], y[rank::world])


def average_(tensors: list[torch.Tensor]) -> None:
    """All-reduce to the mean across ranks, in place (no-op on one process)."""
    rank, world = rank_and_world()
    if world == 1:
        return
    for t in tensors:
        dist.all_reduce(t)
        t.div_(world)


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DDP when distributed (unused parameters allowed: LIMPQ's per-width
    steps and BNs are idle in most passes), else ``model`` itself."""
    if rank_and_world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, find_unused_parameters=True)


def broadcast_buffers_(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BN statistics) to every rank, as DDP does before each forward;
    after the last step each rank holds its own last update."""
    if rank_and_world()[1] == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
