"""Launching an experiment: its config prepared (`experiment.py`), then the training loop
(`trainer.py`) run in this process or in one process per device (DistributedDataParallel)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from ..config import to_container
from ..errors import TiepointError
from . import distributed as dist_lib
from .experiment import prepare_experiment, training_root
from .trainer import BenchmarkHook, Trainer


def _worker(
    rank: int,
    world: int,
    backend: str,
    init_file: str,
    exp_dir: str,
    conf: dict,
    restore: bool,
    benchmark_hook: BenchmarkHook | None,
    progress: bool,
) -> None:
    dist_lib.setup(rank, world, Path(init_file), backend)
    try:
        Trainer(
            Path(exp_dir),
            OmegaConf.create(conf),
            restore,
            benchmark_hook,
            rank=rank,
            world_size=world,
            progress=progress,
        ).run()
    finally:
        dist_lib.cleanup()


def train(
    exp: str,
    conf=None,
    overrides=None,
    restore: bool = False,
    output_dir=None,
    distributed: bool = False,
    num_processes: int | None = None,
    benchmark_hook: BenchmarkHook | None = None,
    progress: bool = True,
) -> Path:
    """Run (or with `restore`, resume) experiment `exp`; returns its directory.

    `benchmark_hook` (e.g. `tiepoint.evaluation.training_hook.run_benchmarks`, what the CLI's
    `--run-benchmarks` passes) evaluates the config's `benchmarks` at the start of each epoch.
    """
    exp_dir = training_root(output_dir) / exp
    conf = prepare_experiment(exp_dir, conf, overrides, restore)
    if not distributed:
        return Trainer(exp_dir, conf, restore, benchmark_hook, progress=progress).run()
    import torch.multiprocessing as mp

    world = dist_lib.default_world_size(num_processes)
    backend = dist_lib.default_backend()
    init_file = exp_dir / f".ddp_rendezvous_{os.getpid()}"
    init_file.unlink(missing_ok=True)
    try:
        mp.spawn(
            _worker,
            args=(
                world,
                backend,
                str(init_file),
                str(exp_dir),
                to_container(conf),
                restore,
                benchmark_hook,
                progress,
            ),
            nprocs=world,
            join=True,
        )
    except mp.ProcessRaisedException as e:
        last = [ln for ln in str(e).strip().splitlines() if ln.strip()][-1]
        raise TiepointError(f"distributed training failed: {last}") from None
    finally:
        init_file.unlink(missing_ok=True)
    return exp_dir
