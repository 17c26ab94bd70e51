"""The training loop, one process or one rank: a matcher trained on top of a frozen extractor
(`TwoViewPipeline`) or a dense matcher such as DKM (`DenseTwoViewPipeline`), chosen by whether the
config's model section has `dense` (`experiment.pipeline_class`).

An experiment (`launch.train`) lives in `outputs/training/<exp>/`: `config.yaml` (`experiment.py`),
`log.txt`, TensorBoard events, `val_history.json` + `val_curves.png` (`validation.py`) and
checkpoints (`checkpoints.py`).
Resumption is exact: items depend only on (seed, epoch, index), the sampler only on (seed, epoch),
and checkpoints carry optimizer, scheduler, scaler and RNG states plus the position in the epoch.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..errors import ConfigError
from . import checkpoints as ckpt_lib
from . import distributed as dist_lib
from .experiment import load_initial_weights, pipeline_class
from .feature_cache import cached_sets
from .schedules import build_optimizer, build_scheduler
from .validation import evaluate, is_better, load_history, summary, to_device, write_history

logger = logging.getLogger("tiepoint")

# (conf, checkpoint, exp_dir, epoch, device) → scalars logged as `test/<key>`; called by rank 0 at
# the start of each epoch when the config has a `benchmarks` section (evaluation.training_hook)
BenchmarkHook = Callable[[DictConfig, Path, Path, int, torch.device], Mapping[str, float]]


class _NullWriter:
    def add_scalar(self, *a, **k):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class _LossModule(torch.nn.Module):
    """Forward + loss in one module so DistributedDataParallel sees every parameter used."""

    def __init__(self, pipeline):
        super().__init__()
        self.pipeline = pipeline

    def forward(self, batch):
        pred = self.pipeline(batch)
        return self.pipeline.loss(pred, batch)


def _precision(mp: str | None, device: torch.device):
    """(autocast context factory, GradScaler or None) for `train.mixed_precision`."""
    if not mp:
        return contextlib.nullcontext, None
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    if mp not in dtypes:
        raise ConfigError(f"train.mixed_precision must be float16, bfloat16 or null, not '{mp}'")
    dtype = dtypes[mp]
    if device.type == "cpu" and dtype == torch.float16:
        logger.warning("float16 autocast is not available on CPU; using bfloat16")
        dtype = torch.bfloat16
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        logger.warning("this GPU has no bfloat16; using float16")
        dtype = torch.float16
    scaler = None
    if device.type == "cuda" and dtype == torch.float16:
        scaler = torch.amp.GradScaler("cuda")
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def _tensorboard(exp_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning(
            "tensorboard is not installed (pip install tiepoint[train]): no TensorBoard logs"
        )
        return _NullWriter()
    return SummaryWriter(str(exp_dir))


class Trainer:
    """One rank of a run: builds data, model, optimizer (restoring a checkpoint with `restore`) in
    `__init__`; `run()` trains until the epochs or a budget end, or Ctrl-C."""

    def __init__(
        self,
        exp_dir: Path,
        conf: DictConfig,
        restore: bool = False,
        benchmark_hook: BenchmarkHook | None = None,
        rank: int = 0,
        world_size: int = 1,
        progress: bool = True,
    ):
        from ..datasets import get_dataset

        self.exp_dir, self.conf, self.tc = Path(exp_dir), conf, conf.train
        tc = self.tc
        self.rank, self.world = rank, world_size
        self.main = rank == 0
        self.benchmark_hook = benchmark_hook if conf.benchmarks else None
        self.progress = progress and self.main
        self.stop_requested = False
        self.interrupted = False
        self.epoch = self.iter = self.step = 0
        self.best = None
        self.last_eval: dict = {}
        self.history: list[dict] = []
        self.skipped = 0
        self.loss_history: list[tuple[int, float]] = []  # (step, training loss) of this run
        self.last_checkpoint: Path | None = None

        dev = tc.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.world > 1 and str(dev).startswith("cuda"):
            dev = f"cuda:{self.rank}"
        self.device = torch.device(dev)
        torch.manual_seed(tc.seed)
        np.random.seed(tc.seed % 2**32)

        data_conf = self.conf.data
        if tc.num_workers is not None:
            data_conf = OmegaConf.merge(data_conf, {"num_workers": tc.num_workers})
        self.data = get_dataset(data_conf)
        self.val_data = get_dataset(self.conf.data_val) if self.conf.data_val else self.data
        self.train_set = self.data.get_dataset("train")
        self.val_set = self.val_data.get_dataset("val")

        self.model = pipeline_class(self.conf.model)(self.conf.model).to(self.device)
        self.trained = self.model.trained  # "matcher" or "dense": what checkpoints hold
        if tc.feature_cache.enabled:
            self.train_set, self.val_set = cached_sets(
                self.conf,
                self.model,
                self.train_set,
                self.val_set,
                self.exp_dir,
                self.device,
                self.main,
                self.progress,
            )

        gbs = self.data.batch_size("train")
        if gbs % self.world:
            raise ConfigError(
                f"data.train_batch_size={gbs} is not divisible by {self.world} processes"
            )
        self.train_loader = self.data.get_data_loader(
            "train",
            rank=self.rank,
            world_size=self.world,
            dataset=self.train_set,
            batch_size=gbs // self.world,
        )
        self.val_loader = self.val_data.get_data_loader("val", dataset=self.val_set)
        if len(self.train_loader) == 0:
            raise ConfigError(
                f"the training set ({len(self.train_set)} items) is smaller than one batch ({gbs})"
            )

        if tc.load_experiment and not restore:
            load_initial_weights(self.model, tc.load_experiment, self.exp_dir.parent)

        self.optimizer = build_optimizer(self.model, tc)
        self.scheduler = build_scheduler(self.optimizer, tc, tc.epochs, len(self.train_loader))
        self.on_epoch = bool((tc.lr_schedule or {}).get("on_epoch", True))
        self.group_names = self._group_names()
        self.autocast, self.scaler = _precision(tc.mixed_precision, self.device)

        if restore:
            self._restore_latest()
        else:  # ranks share the initial weights, not the later randomness (padding)
            torch.manual_seed(tc.seed + self.rank)

        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DDP(
                _LossModule(self.model),
                device_ids=ids,
                find_unused_parameters=bool(tc.find_unused_parameters),
            )
        else:
            self.step_module = _LossModule(self.model)

        self.writer = _NullWriter()
        self._log_file: logging.Handler | None = None
        self._old_level = logger.level
        if self.main:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            # log.txt gets INFO records even when the caller's logging is quieter
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            self._log_file = logging.FileHandler(self.exp_dir / "log.txt")
            self._log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(self._log_file)
            self.writer = _tensorboard(self.exp_dir)
            if restore:
                self.history = load_history(self.exp_dir, self.step)

    # ---------------------------------------------------------------- setup
    def _restore_latest(self) -> None:
        path = ckpt_lib.latest_checkpoint(self.exp_dir)
        if path is None:
            raise ConfigError(
                f"--restore: experiment {self.exp_dir} has no checkpoint to resume from"
            )
        ck = ckpt_lib.load_matcher_checkpoint(self.model, path)
        ckpt_lib.restore_optimization(ck, self.optimizer, self.scheduler, self.scaler)
        self.epoch, self.iter, self.step = int(ck["epoch"]), int(ck["iter"]), int(ck["step"])
        self.best = ck.get("best")
        self.last_eval = ck.get("eval") or {}
        if ck.get("rng"):
            ckpt_lib.set_rng_state(ck["rng"])
            if self.rank:
                torch.manual_seed(self.tc.seed + self.rank + self.step)
        logger.info(
            "resuming %s at epoch %d, iteration %d (step %d)",
            path.name,
            self.epoch,
            self.iter,
            self.step,
        )

    def _group_names(self) -> list[str]:
        """TensorBoard names of the optimizer's learning rates: `lr` with one parameter group;
        else `lr/<k>` for `train.param_groups[k]` and `lr/rest` for the parameters none matched."""
        groups = self.optimizer.param_groups
        if len(groups) == 1:
            return ["lr"]
        specs = list(self.tc.param_groups or [])
        return [f"lr/{k}" if k < len(specs) else "lr/rest" for k in range(len(groups))]

    def _log_param_groups(self) -> None:
        specs = list(self.tc.param_groups or [])
        for k, (g, name) in enumerate(zip(self.optimizer.param_groups, self.group_names)):
            what = f"regexp '{specs[k].regexp}'" if k < len(specs) else "all other parameters"
            n = sum(p.numel() for p in g["params"])
            logger.info("parameter group %s (%s): %d parameters, lr %.3g", name, what, n, g["lr"])

    # ---------------------------------------------------------------- checkpoints
    def _state(self, epoch: int, it: int) -> dict:
        return ckpt_lib.training_state(
            self.model,
            self.conf,
            self.optimizer,
            self.scheduler,
            self.scaler,
            epoch,
            it,
            self.step,
            self.best,
            self.last_eval,
        )

    def save(self, epoch: int, it: int, interrupted: bool = False) -> Path | None:
        if not self.main:
            return None
        name = f"checkpoint_{epoch}_{self.step}{'_interrupted' if interrupted else ''}.tar"
        path = ckpt_lib.save_checkpoint(self.exp_dir / name, self._state(epoch, it))
        ckpt_lib.prune_checkpoints(self.exp_dir, self.tc.keep_last_checkpoints)
        self.last_checkpoint = path
        return path

    # ---------------------------------------------------------------- validation
    def validate(self, epoch: int, it: int) -> dict:
        if not self.main:
            return {}
        tc = self.tc
        results = evaluate(
            self.model, self.val_loader, self.device, self.autocast, tc.seed, tc.val_max_batches
        )
        self.last_eval = results
        for k, v in results.items():
            self.writer.add_scalar(f"val/{k}", v, self.step)
        self.history.append({"step": self.step, "epoch": epoch, "iter": it, **results})
        write_history(self.exp_dir, self.history)
        if is_better(results, tc.best_key, tc.best_mode, self.best):
            self.best = results[tc.best_key]
            ckpt_lib.save_checkpoint(self.exp_dir / "checkpoint_best.tar", self._state(epoch, it))
        logger.info(
            "validation at step %d (epoch %d): %s", self.step, epoch, summary(results, tc.best_key)
        )
        return results

    def benchmarks(self, epoch: int) -> None:
        """Hand the latest checkpoint (saved now if there is none yet) to the benchmark hook."""
        if not self.main or self.benchmark_hook is None:
            return
        path = self.last_checkpoint or self.save(self.epoch, self.iter)
        scalars = self.benchmark_hook(self.conf, path, self.exp_dir, epoch, self.device)
        for k, v in scalars.items():
            self.writer.add_scalar(f"test/{k}", v, self.step)

    # ---------------------------------------------------------------- training
    def _sigint(self, signum, frame):
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = self.interrupted = True
        logger.warning(
            "Ctrl-C: finishing this step, then validating and saving (press again to abort)"
        )

    def train_step(self, batch) -> dict | None:
        batch = to_device(batch, self.device)
        with self.autocast():
            losses, metrics = self.step_module(batch)
            loss = losses["total"].mean()
        (bad,) = dist_lib.any_flags([not bool(torch.isfinite(loss))], self.device)
        if bad:
            self.skipped += 1
            logger.warning(
                "non-finite loss at step %d: skipped (%d so far)", self.step, self.skipped
            )
            # all ranks skip together: no collective is left waiting
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.tc.clip_grad:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, self.tc.clip_grad)
            if not torch.isfinite(norm) and self.scaler is None:
                self.skipped += 1
                logger.warning("non-finite gradient at step %d: skipped", self.step)
                self.optimizer.zero_grad(set_to_none=True)
                return None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not self.on_epoch:
            self.scheduler.step()
        out = {f"loss/{k}": float(v.detach().float().mean()) for k, v in losses.items()}
        out.update({k: float(v.detach().float().nanmean()) for k, v in metrics.items()})
        self.loss_history.append((self.step + 1, out["loss/total"]))
        return out

    def _run_epoch(self, epoch: int, start_it: int, start_time: float) -> tuple[int, bool]:
        """Iterations `start_it`… of `epoch`, with periodic logging, validation and checkpoints;
        returns (iterations done, whether a stop — budget or Ctrl-C — was requested)."""
        tc = self.tc
        if start_it == 0:
            self.benchmarks(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        sampler = self.train_loader.sampler
        sampler.set_epoch(epoch)
        sampler.set_start(start_it * self.train_loader.batch_size)
        it, stop = start_it, False
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch}",
            initial=start_it,
            total=start_it + len(self.train_loader),
            disable=not self.progress,
            unit="it",
        )
        for batch in bar:
            out = self.train_step(batch)
            it += 1
            if out is not None:
                self.step += 1
                if self.step % max(1, tc.log_every_iter) == 0 or self.step == 1:
                    for k, v in out.items():
                        self.writer.add_scalar(f"training/{k}", v, self.step)
                    for g, name in zip(self.optimizer.param_groups, self.group_names):
                        self.writer.add_scalar(f"training/{name}", g["lr"], self.step)
                    bar.set_postfix(loss=f"{out['loss/total']:.3f}")
            budget = (
                tc.max_minutes is not None and time.time() - start_time > 60 * tc.max_minutes
            ) or (tc.max_iterations is not None and self.step >= tc.max_iterations)
            (stop,) = dist_lib.any_flags([self.stop_requested or budget], self.device)
            # the end of the epoch and a stop validate and save anyway (in run)
            periodic = out is not None and not (stop or it >= start_it + len(self.train_loader))
            if periodic and tc.eval_every_iter and self.step % tc.eval_every_iter == 0:
                self.validate(epoch, it)
            if periodic and tc.save_every_iter and self.step % tc.save_every_iter == 0:
                self.save(epoch, it)
            if stop:
                break
        bar.close()
        return it, stop

    def run(self) -> Path:
        tc = self.tc
        start_time = time.time()
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._sigint)
        try:
            if self.main:
                logger.info(
                    "training %s: %d pairs/epoch, %d iterations/epoch, %d epochs, device %s%s",
                    self.exp_dir.name,
                    len(self.train_set),
                    len(self.train_loader),
                    tc.epochs,
                    self.device,
                    f", {self.world} processes" if self.world > 1 else "",
                )
                self._log_param_groups()
            if tc.eval_at_start and self.step == 0 and not self.history:
                self.validate(self.epoch, self.iter)
            dist_lib.barrier()
            self.model.train()
            for epoch in range(self.epoch, tc.epochs):
                start_it = self.iter if epoch == self.epoch else 0
                it, stop = self._run_epoch(epoch, start_it, start_time)
                if stop and it < start_it + len(self.train_loader):
                    self.validate(epoch, it)
                    self.save(epoch, it, interrupted=self.interrupted)
                    break
                # end of epoch
                if self.on_epoch:
                    self.scheduler.step()
                self.iter = 0
                self.validate(epoch + 1, 0)
                self.save(epoch + 1, 0)
                if stop:
                    break
                dist_lib.barrier()
            if self.main:
                logger.info(
                    "done: %d steps (%d skipped) in %.1f min → %s",
                    self.step,
                    self.skipped,
                    (time.time() - start_time) / 60,
                    self.exp_dir,
                )
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            self.writer.flush()
            self.writer.close()
            if self._log_file is not None:
                logger.removeHandler(self._log_file)
                self._log_file.close()
                logger.setLevel(self._old_level)
        return self.exp_dir
