"""Data-parallel training on the GPUs of one machine (or several) with torch.distributed.

Launched by torchrun (`facegan train --nproc N` runs it for you), each process reads RANK,
WORLD_SIZE and LOCAL_RANK from the environment. Every rank seeds the same generators, draws the
same global batch of indices and latents, and trains on its own slice of it; DDP averages the
gradients, so a step equals a single-process step on the global batch (up to BatchNorm, whose
statistics are per rank, as in every DDP recipe). Rank 0 alone writes checkpoints and samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process stands: rank among `size` processes, and its local device index."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_env() -> World:
    """The World torchrun describes in the environment (a single process without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(world: World, backend: str) -> None:
    """Join the process group (`Runtime.process_group_backend`: NCCL on CUDA, gloo on CPU) when
    there is more than one process."""
    if world.distributed and not dist.is_initialized():
        dist.init_process_group(backend, rank=world.rank, world_size=world.size)


def close(world: World) -> None:
    """Leave the process group."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_mean(t: torch.Tensor, world: World) -> torch.Tensor:
    """Mean of a tensor over all ranks (in place); a no-op for a single process."""
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= world.size
    return t


def gather(t: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's `t` concatenated along dim 0, in rank order, on every rank; `t` itself for a
    single process. Not differentiable: for values all ranks must hold alike (e.g. an image pool)."""
    if not world.distributed:
        return t
    t = t.contiguous()  # one layout for what is sent and what receives it (not channels_last)
    parts = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def any_true(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when it is true on any rank (a collective: all ranks must call it)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
