"""Config-driven training of a matcher on top of a frozen extractor.

`train(exp, conf)` runs an experiment in `outputs/training/<exp>/`: `config.yaml`, `log.txt`,
TensorBoard events, `val_history.json` + `val_curves.png` (validation metrics over steps), and
checkpoints (see `checkpoints.py` for their layout). The experiment config has four sections:
    data:   a dataset config (`datasets.get_dataset`), e.g. {name: homographies, data_dir: ...}
    model:  a TwoViewPipeline config: {extractor: {...}, matcher: {...}, ground_truth: {...}}
    train:  DEFAULT_TRAIN_CONF below
    benchmarks: optional {<benchmark>: {preprocessing: ..., overrides: [...]}} for --run-benchmarks
Resumption is exact: items depend only on (seed, epoch, index), the sampler only on (seed, epoch),
and checkpoints carry optimizer, scheduler, scaler and RNG states plus the position in the epoch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..config import load_preset, merge_strict, to_container
from ..errors import ConfigError, TiepointError, WeightsError
from . import checkpoints as ckpt_lib
from . import distributed as dist_lib
from .schedules import build_optimizer, build_scheduler

logger = logging.getLogger("tiepoint")

DEFAULT_TRAIN_CONF = {
    "seed": 0,
    "epochs": 1,
    "max_iterations": None,  # stop after this many optimizer steps in total
    "max_minutes": None,  # stop (validate, checkpoint) after this much wall-clock time in this run
    "optimizer": "adam",  # adam | adamw | sgd | rmsprop
    "optimizer_options": {},
    "opt_regexp": None,  # train only parameters whose name matches
    "lr": 1e-4,
    "lr_schedule": {
        "type": None,  # null | exp | step | cosine
        "on_epoch": True,  # counter advances per epoch (else per iteration)
        "start": 0,
        "exp_div_10": 10,
        "step_size": 1,
        "gamma": 0.1,
        "min_factor": 0.0,
        "total": None,
        "warmup": 0,
    },
    "clip_grad": None,  # max gradient norm
    "mixed_precision": None,  # null | float16 | bfloat16
    "device": None,  # default: cuda if available
    "eval_every_iter": 500,
    "eval_at_start": True,  # a step-0 validation gives the curves their starting point
    "val_max_batches": None,
    "save_every_iter": 1000,
    "log_every_iter": 20,
    "keep_last_checkpoints": 5,
    "best_key": "loss/total",
    "best_mode": "min",  # min | max
    "load_experiment": None,  # experiment name, checkpoint path or official weights name
    "feature_cache": {
        "enabled": False,
        "path": None,
        "num_epochs": 1,
        "batch_size": 8,
    },  # path: folder
    "num_workers": None,  # overrides data.num_workers when set
    "find_unused_parameters": False,  # DDP: set when some trainable parameters get no gradient
}
EXPERIMENT_DEFAULTS = {
    "data": None,
    "data_val": None,
    "model": None,
    "train": DEFAULT_TRAIN_CONF,
    "benchmarks": None,
}


def training_root(output_dir: str | os.PathLike | None = None) -> Path:
    """`<outputs>/training`, where <outputs> is `output_dir`, $TIEPOINT_OUTPUTS or ./outputs."""
    return Path(output_dir or os.environ.get("TIEPOINT_OUTPUTS") or "outputs") / "training"


def build_conf(
    conf: str | os.PathLike | dict | DictConfig | None,
    overrides: DictConfig | dict | None = None,
    base: DictConfig | dict | None = None,
) -> DictConfig:
    """Experiment config = defaults ⊕ (saved config) ⊕ preset/YAML ⊕ dotted overrides, strictly."""
    if isinstance(conf, (str, os.PathLike)):
        conf = load_preset("training", str(conf))
    # data/model sections are checked against their classes' defaults (better "did you mean" hints)
    merged = OmegaConf.merge(*(c for c in (base, conf, overrides) if c is not None))
    out = merge_strict(EXPERIMENT_DEFAULTS, merged, where="training config")
    validate_conf(out)
    return out


def validate_conf(conf: DictConfig) -> None:
    """Check every section against its class defaults before anything heavy starts."""
    from ..datasets import dataset_class
    from ..models import model_class
    from ..models.two_view_pipeline import TwoViewPipeline

    if not conf.data:
        raise ConfigError("training config has no data section")
    if not conf.model:
        raise ConfigError("training config has no model section")
    for section in ("data", "data_val"):
        if conf[section]:
            cls = dataset_class(conf[section].get("name"))
            merge_strict(cls.full_default_conf(), conf[section], where=section)
    merge_strict(TwoViewPipeline.full_default_conf(), conf.model, where="model")
    for kind in ("extractor", "matcher"):
        sub = conf.model.get(kind)
        if sub:
            cls = model_class(kind, sub.get("name"))
            cls.build_conf(sub, where=f"model.{kind}")  # presets (e.g. `features`) included
    if conf.train.best_mode not in ("min", "max"):
        raise ConfigError(f"train.best_mode must be min or max, not '{conf.train.best_mode}'")


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to_device(v, device) for v in batch]
    return batch


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o666 & ~ckpt_lib._umask())
    os.replace(tmp, path)


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


def resolve_experiment(spec: str, root: Path) -> Path:
    """An experiment name (its best, else latest checkpoint) or a checkpoint file."""
    p = Path(spec)
    if p.suffix in (".tar", ".pth", ".pt") and p.exists():
        return p
    d = p if p.is_dir() else root / spec
    if not d.is_dir():
        raise WeightsError(
            f"train.load_experiment: no experiment or checkpoint '{spec}' (looked in {root})"
        )
    best = d / "checkpoint_best.tar"
    found = best if best.exists() else ckpt_lib.latest_checkpoint(d)
    if found is None:
        raise WeightsError(f"train.load_experiment: experiment {d} has no checkpoint")
    return found


def load_experiment(spec: str, overrides: dict | None = None, output_dir=None):
    """Rebuild a trained TwoViewPipeline from its checkpoint (its stored config ⊕ `overrides`)."""
    from ..models.two_view_pipeline import TwoViewPipeline

    path = resolve_experiment(spec, training_root(output_dir))
    ck = ckpt_lib.load_checkpoint(path)
    mconf = OmegaConf.merge(ck["conf"]["model"], overrides or {})
    mconf.matcher.weights = None
    if "pretrained" in mconf.matcher:
        mconf.matcher.pretrained = False
    model = TwoViewPipeline(mconf)
    ckpt_lib.check_compatible(model.state_dict(), ck["model"], str(path))
    model.load_state_dict(ck["model"], strict=False)
    return model.eval()


class Trainer:
    def __init__(
        self,
        exp_dir: Path,
        conf: DictConfig,
        restore: bool = False,
        run_benchmarks: bool = False,
        rank: int = 0,
        world_size: int = 1,
        progress: bool = True,
    ):
        self.exp_dir, self.conf, self.tc = Path(exp_dir), conf, conf.train
        self.rank, self.world = rank, world_size
        self.main = rank == 0
        self.run_benchmarks = run_benchmarks
        self.progress = progress and self.main
        self.stop_requested = False
        self.interrupted = False
        self.epoch = self.iter = self.step = 0
        self.best = None
        self.last_eval: dict = {}
        self.history: list[dict] = []
        self.skipped = 0
        self.loss_history: list[tuple[int, float]] = []  # (step, training loss) of this run
        self._restore = restore
        self._setup()

    # ---------------------------------------------------------------- setup
    def _setup(self) -> None:
        from ..datasets import get_dataset
        from ..datasets.cache import CachedPairs, export_features
        from ..models.two_view_pipeline import TwoViewPipeline

        tc = self.tc
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

        self.model = TwoViewPipeline(self.conf.model).to(self.device)
        if tc.feature_cache.enabled:
            self._use_feature_cache(export_features, CachedPairs)

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

        if tc.load_experiment and not self._restore:
            self._load_initial_weights(tc.load_experiment)

        self.optimizer = build_optimizer(self.model, tc)
        self.scheduler = build_scheduler(self.optimizer, tc, tc.epochs, len(self.train_loader))
        self.on_epoch = bool((tc.lr_schedule or {}).get("on_epoch", True))
        self._setup_precision()

        if self._restore:
            self._restore_latest()
        if not self._restore:  # ranks share the initial weights, not the later randomness (padding)
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
        if self.main:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            # log.txt gets INFO records even when the caller's logging is quieter
            self._old_level = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            self._log_file = logging.FileHandler(self.exp_dir / "log.txt")
            self._log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(self._log_file)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.exp_dir))
            except ImportError:
                logger.warning(
                    "tensorboard is not installed (pip install tiepoint[train]): "
                    "no TensorBoard logs"
                )
            hist = self.exp_dir / "val_history.json"
            if self._restore and hist.exists():
                self.history = [h for h in json.loads(hist.read_text()) if h["step"] <= self.step]

    def _use_feature_cache(self, export_features, CachedPairs) -> None:
        fc = self.tc.feature_cache
        # a relative path is relative to the training root, so experiments can share one cache
        root = (self.exp_dir.parent / fc.path) if fc.path else self.exp_dir / "feature_cache"
        paths = {"train": root / "train.h5", "val": root / "val.h5"}
        if self.main:
            loader_keys = {
                "batch_size",
                "train_batch_size",
                "val_batch_size",
                "test_batch_size",
                "num_workers",
                "num_threads",
                "prefetch_factor",
                "shuffle_training",
            }

            def fingerprint(data_conf, split):
                data = {k: v for k, v in to_container(data_conf).items() if k not in loader_keys}
                return json.dumps(
                    {
                        "data": data,
                        "split": split,
                        "num_epochs": fc.num_epochs,
                        "extractor": to_container(self.conf.model.extractor),
                        "num_keypoints": self.model.num_keypoints,
                    },
                    sort_keys=True,
                )

            export_features(
                self.train_set,
                self.model,
                paths["train"],
                fc.num_epochs,
                fc.batch_size,
                device=self.device,
                progress=self.progress,
                fingerprint=fingerprint(self.conf.data, "train"),
            )
            export_features(
                self.val_set,
                self.model,
                paths["val"],
                1,
                fc.batch_size,
                device=self.device,
                progress=self.progress,
                fingerprint=fingerprint(self.conf.data_val or self.conf.data, "val"),
            )
        dist_lib.barrier()
        self.train_set, self.val_set = CachedPairs(paths["train"]), CachedPairs(paths["val"])

    def _setup_precision(self) -> None:
        mp = self.tc.mixed_precision
        self.autocast = contextlib.nullcontext
        self.scaler = None
        if not mp:
            return
        dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}
        if mp not in dtypes:
            raise ConfigError(
                f"train.mixed_precision must be float16, bfloat16 or null, not '{mp}'"
            )
        dtype = dtypes[mp]
        if self.device.type == "cpu" and dtype == torch.float16:
            logger.warning("float16 autocast is not available on CPU; using bfloat16")
            dtype = torch.bfloat16
        if (
            self.device.type == "cuda"
            and dtype == torch.bfloat16
            and not torch.cuda.is_bf16_supported()
        ):
            logger.warning("this GPU has no bfloat16; using float16")
            dtype = torch.float16
        self.autocast = lambda: torch.autocast(self.device.type, dtype=dtype)
        if self.device.type == "cuda" and dtype == torch.float16:
            self.scaler = torch.amp.GradScaler("cuda")

    def _load_model_checkpoint(self, path) -> dict:
        """Load a checkpoint's matcher weights after checking the architectures agree."""
        ck = ckpt_lib.load_checkpoint(path)
        ckpt_lib.check_compatible(
            self.model.state_dict(),
            ck["model"],
            str(path),
            (ck.get("conf") or {}).get("model", {}).get("matcher"),
            to_container(self.conf.model.matcher),
        )
        self.model.load_state_dict(ck["model"], strict=False)
        return ck

    def _load_initial_weights(self, spec: str) -> None:
        from .. import weights as weights_lib

        if spec in weights_lib.WEIGHTS:  # official weights by name
            self.model.matcher.load_weights(spec)
            logger.info("matcher initialised from official weights %s", spec)
            return
        path = resolve_experiment(spec, self.exp_dir.parent)
        self._load_model_checkpoint(path)
        logger.info("matcher initialised from %s", path)

    def _restore_latest(self) -> None:
        path = ckpt_lib.latest_checkpoint(self.exp_dir)
        if path is None:
            raise ConfigError(
                f"--restore: experiment {self.exp_dir} has no checkpoint to resume from"
            )
        ck = self._load_model_checkpoint(path)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["lr_scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
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

    # ---------------------------------------------------------------- checkpoints
    def _state(self, epoch: int, it: int) -> dict:
        return {
            "model": ckpt_lib.matcher_state(self.model),
            "conf": to_container(self.conf),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch,
            "iter": it,
            "step": self.step,
            "best": self.best,
            "eval": self.last_eval,
            "rng": ckpt_lib.rng_state(),
            "tiepoint_checkpoint": 1,
        }

    def save(self, epoch: int, it: int, interrupted: bool = False) -> Path | None:
        if not self.main:
            return None
        name = f"checkpoint_{epoch}_{self.step}{'_interrupted' if interrupted else ''}.tar"
        path = ckpt_lib.save_checkpoint(self.exp_dir / name, self._state(epoch, it))
        ckpt_lib.prune_checkpoints(self.exp_dir, self.tc.keep_last_checkpoints)
        self.last_checkpoint = path
        return path

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self, epoch: int, it: int) -> dict:
        if not self.main:
            return {}
        model = self.model
        model.eval()
        values: dict[str, list] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.tc.seed)
            for b, batch in enumerate(self.val_loader):
                if self.tc.val_max_batches and b >= self.tc.val_max_batches:
                    break
                batch = _to_device(batch, self.device)
                with self.autocast():
                    pred = model(batch)
                    losses, metrics = model.loss(pred, batch)
                for k, v in losses.items():
                    values.setdefault(f"loss/{k}", []).append(v.detach().float().reshape(-1).cpu())
                for k, v in metrics.items():
                    values.setdefault(k, []).append(v.detach().float().reshape(-1).cpu())
        model.train()
        results = {}
        for k, v in values.items():
            t = torch.cat(v)
            results[k] = float(t.nanmean()) if torch.isfinite(t).any() else float("nan")
        self.last_eval = results
        for k, v in results.items():
            self.writer.add_scalar(f"val/{k}", v, self.step)
        self.history.append({"step": self.step, "epoch": epoch, "iter": it, **results})
        _atomic_write(self.exp_dir / "val_history.json", json.dumps(self.history, indent=1))
        self._plot_curves()
        key = self.tc.best_key
        if key not in results:
            raise ConfigError(
                f"train.best_key '{key}' is not a validation metric; "
                f"available: {', '.join(sorted(results))}"
            )
        v = results[key]
        better = self.best is None or (
            v < self.best if self.tc.best_mode == "min" else v > self.best
        )
        if math.isfinite(v) and better:
            self.best = v
            ckpt_lib.save_checkpoint(self.exp_dir / "checkpoint_best.tar", self._state(epoch, it))
        shown = dict.fromkeys((key, "loss/total", "match_recall", "match_precision"))
        summary = ", ".join(f"{k} {results[k]:.4g}" for k in shown if k in results)
        logger.info("validation at step %d (epoch %d): %s", self.step, epoch, summary)
        return results

    def _plot_curves(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        steps = [h["step"] for h in self.history]
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        for k in ("match_recall", "match_precision", "average_precision"):
            if any(k in h for h in self.history):
                ax[0].plot(
                    steps, [h.get(k, np.nan) for h in self.history], marker="o", ms=3, label=k
                )
        (
            ax[0].set_xlabel("training step"),
            ax[0].set_ylim(0, 1),
            ax[0].legend(),
            ax[0].grid(alpha=0.3),
        )
        ax[0].set_title(f"validation: {self.exp_dir.name}")
        ax[1].plot(
            steps, [h.get("loss/total", np.nan) for h in self.history], marker="o", ms=3, color="k"
        )
        (
            ax[1].set_xlabel("training step"),
            ax[1].set_ylabel("validation loss"),
            ax[1].grid(alpha=0.3),
        )
        fig.tight_layout()
        tmp = self.exp_dir / ".val_curves.tmp.png"
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, self.exp_dir / "val_curves.png")

    # ---------------------------------------------------------------- benchmarks
    def benchmarks(self, epoch: int) -> None:
        if not self.main or not self.conf.benchmarks:
            return
        try:
            from ..evaluation import runner
        except ImportError:
            logger.warning("--run-benchmarks: tiepoint.evaluation is not available; skipped")
            return
        path = getattr(self, "last_checkpoint", None) or self.save(self.epoch, self.iter)
        for name, bconf in self.conf.benchmarks.items():
            bconf = bconf or {}
            matcher = to_container(self.conf.model.matcher)
            matcher.update({"weights": None})
            if "pretrained" in matcher:
                matcher["pretrained"] = False
            pipeline = {
                "preprocessing": to_container(bconf.get("preprocessing")) or {"resize": 1024},
                "extractor": to_container(bconf.get("extractor"))
                or to_container(self.conf.model.extractor),
                "matcher": matcher,
            }
            try:
                summaries, out = runner.run(
                    name,
                    pipeline,
                    tag=f"{self.exp_dir.name}/{epoch}",
                    overwrite=True,
                    weights=str(path),
                    overrides=list(bconf.get("overrides") or []),
                    estimator=bconf.get("estimator"),
                    ransac_th=bconf.get("ransac_th"),
                    device=self.device,
                    progress=False,
                    output_dir=self.exp_dir.parent.parent,
                )
            except TiepointError as e:
                logger.warning("benchmark %s failed: %s", name, e)
                continue
            for k, v in summaries.items():
                if isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                    self.writer.add_scalar(f"test/{name}/{k}", v, self.step)
            logger.info("benchmark %s (epoch %d) → %s", name, epoch, out)

    # ---------------------------------------------------------------- training
    def _sigint(self, signum, frame):
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = self.interrupted = True
        logger.warning(
            "Ctrl-C: finishing this step, then validating and saving (press again to abort)"
        )

    def train_step(self, batch) -> dict | None:
        batch = _to_device(batch, self.device)
        with self.autocast():
            losses, metrics = self.step_module(batch)
            loss = losses["total"].mean()
        (bad,) = dist_lib.any_flags([not bool(torch.isfinite(loss))], self.device)
        if bad:
            self.skipped += 1
            logger.warning(
                "non-finite loss at step %d: skipped (%d so far)", self.step, self.skipped
            )
            self.optimizer.zero_grad(
                set_to_none=True
            )  # all ranks skip together: no collective is left waiting
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
            if tc.eval_at_start and self.step == 0 and not self.history:
                self.validate(self.epoch, self.iter)
            dist_lib.barrier()
            self.model.train()
            stop = False
            for epoch in range(self.epoch, tc.epochs):
                start_it = self.iter if epoch == self.epoch else 0
                if self.run_benchmarks and start_it == 0:
                    self.benchmarks(epoch)
                if hasattr(self.train_set, "set_epoch"):
                    self.train_set.set_epoch(epoch)
                sampler = self.train_loader.sampler
                sampler.set_epoch(epoch)
                sampler.set_start(start_it * self.train_loader.batch_size)
                it = start_it
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
                            self.writer.add_scalar(
                                "training/lr", self.optimizer.param_groups[0]["lr"], self.step
                            )
                            bar.set_postfix(loss=f"{out['loss/total']:.3f}")
                    budget = (
                        tc.max_minutes is not None
                        and time.time() - start_time > 60 * tc.max_minutes
                    ) or (tc.max_iterations is not None and self.step >= tc.max_iterations)
                    (stop,) = dist_lib.any_flags([self.stop_requested or budget], self.device)
                    epoch_done = it >= start_it + len(self.train_loader)
                    if (
                        out is not None
                        and tc.eval_every_iter
                        and self.step % tc.eval_every_iter == 0
                        and not (stop or epoch_done)
                    ):
                        self.validate(epoch, it)
                    if (
                        out is not None
                        and tc.save_every_iter
                        and self.step % tc.save_every_iter == 0
                        and not (stop or epoch_done)
                    ):
                        self.save(epoch, it)
                    if stop:
                        break
                bar.close()
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
            if self.main and hasattr(self, "_log_file"):
                logger.removeHandler(self._log_file)
                self._log_file.close()
                logger.setLevel(self._old_level)
        return self.exp_dir


def _worker(
    rank: int,
    world: int,
    backend: str,
    init_file: str,
    exp_dir: str,
    conf: dict,
    restore: bool,
    run_benchmarks: bool,
    progress: bool,
) -> None:
    dist_lib.setup(rank, world, Path(init_file), backend)
    try:
        Trainer(
            Path(exp_dir), OmegaConf.create(conf), restore, run_benchmarks, rank, world, progress
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
    run_benchmarks: bool = False,
    progress: bool = True,
) -> Path:
    """Run (or with `restore`, resume) experiment `exp`; returns its directory."""
    exp_dir = training_root(output_dir) / exp
    saved = exp_dir / "config.yaml"
    if restore:
        if not saved.exists():
            raise ConfigError(f"--restore: {saved} does not exist (nothing to resume)")
        conf = build_conf(conf, overrides, base=OmegaConf.load(saved))
    else:
        if conf is None:
            raise ConfigError("--conf is required (a packaged training preset or a YAML file)")
        if ckpt_lib.list_checkpoints(exp_dir) or (exp_dir / "checkpoint_best.tar").exists():
            raise ConfigError(
                f"experiment {exp_dir} already has checkpoints: use --restore or another name"
            )
        conf = build_conf(conf, overrides)
    exp_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(saved, OmegaConf.to_yaml(conf))
    if not distributed:
        return Trainer(exp_dir, conf, restore, run_benchmarks, progress=progress).run()
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
                run_benchmarks,
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
