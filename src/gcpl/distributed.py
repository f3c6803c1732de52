"""Several processes (GPUs, or CPU processes with gloo) under `accelerate launch` or `torchrun`.

Both launchers set RANK / WORLD_SIZE / LOCAL_RANK; gcpl reads them and joins the process group
itself, so one code path serves both. What is split: `gcpl eval` shards test images, `gcpl train`
shards classes (GCPL) or gradient groups (CoMPLe); results equal a single process's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def owns(self, i: int) -> bool:
        """Round-robin ownership of item i."""
        return i % self.size == self.rank


def world() -> World:
    """The current process's place; initialises the process group on first use when launched."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("GCPL_DIST_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def default_device_name(w: World) -> str | None:
    """Under a multi-process launch on GPUs, each process takes its own GPU."""
    if w.active and torch.cuda.is_available():
        return f"cuda:{w.local_rank}"
    return None
