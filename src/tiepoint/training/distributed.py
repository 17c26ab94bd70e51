"""Multi-process data-parallel helpers: gloo on CPU, NCCL on GPUs, one process per device.

Ranks agree on control flow through `all_flags` (skip a non-finite step, stop on Ctrl-C or a time
budget) so no rank waits forever for a collective the others skipped.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(rank_: int, world: int, init_file: Path, backend: str) -> None:
    """Join the process group through a rendezvous file (no free TCP port needed)."""
    if backend == "nccl":
        torch.cuda.set_device(rank_)
    # long timeout: rank 0 alone exports the feature cache or runs benchmarks while the others wait
    dist.init_process_group(
        backend,
        init_method=f"file://{Path(init_file).resolve()}",
        rank=rank_,
        world_size=world,
        timeout=datetime.timedelta(hours=6),
    )


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def any_flags(flags: list[bool], device: torch.device | str = "cpu") -> list[bool]:
    """Element-wise OR of boolean flags over all ranks."""
    if world_size() == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def default_world_size(requested: int | None = None) -> int:
    if requested:
        return int(requested)
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, min(2, os.cpu_count() or 1))
