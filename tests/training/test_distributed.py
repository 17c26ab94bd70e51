"""Two CPU processes (gloo) train data-parallel: each sees its own data, both take identical steps."""

import os
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.training.test_trainer import make_images, tiny_conf


def _rank_main(rank: int, world: int, init_file: str, out: str, conf: dict) -> None:
    from omegaconf import OmegaConf

    from tiepoint.training import distributed as dist_lib
    from tiepoint.training.trainer import Trainer

    torch.set_num_threads(1)
    dist_lib.setup(rank, world, Path(init_file), "gloo")
    try:
        t = Trainer(
            Path(out) / "exp", OmegaConf.create(conf), rank=rank, world_size=world, progress=False
        )
        init = {k: v.clone() for k, v in t.model.matcher.state_dict().items()}
        t.run()
        torch.save(
            {"init": init, "final": t.model.matcher.state_dict(), "losses": t.loss_history},
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist_lib.cleanup()


def test_two_gloo_processes_take_identical_steps(tmp_path):
    from tiepoint.config import to_container
    from tiepoint.training import build_conf

    images = make_images(tmp_path / "images")
    conf = to_container(build_conf(tiny_conf(images, max_iterations=3)))
    init_file = tmp_path / "rendezvous"
    env = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        mp.spawn(_rank_main, args=(2, str(init_file), str(tmp_path), conf), nprocs=2, join=True)
    finally:
        if env is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = env
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    # same initial weights (same seed), then identical updates on both ranks ...
    for k in r0["init"]:
        assert torch.equal(r0["init"][k], r1["init"][k]), k
        assert torch.equal(r0["final"][k], r1["final"][k]), k
    assert any(not torch.equal(r0["init"][k], r0["final"][k]) for k in r0["init"])
    # ... although each rank computed its loss on a different shard of the batch
    assert len(r0["losses"]) == len(r1["losses"]) == 3
    assert all(a[1] != b[1] for a, b in zip(r0["losses"], r1["losses"]))
    # only rank 0 writes checkpoints
    assert (tmp_path / "exp" / "checkpoint_best.tar").exists()
