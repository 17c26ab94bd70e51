"""Validation during training: the validation set's losses and metrics under a fixed seed (so
every validation of a run sees the same samples), the record of all validations
(`val_history.json` + `val_curves.png`), and the best-so-far rule for `checkpoint_best.tar`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..errors import ConfigError
from ..viz.curves import plot_validation_history

HISTORY = "val_history.json"
CURVES = "val_curves.png"


def to_device(batch, device):
    """Tensors of a (nested) batch moved to `device`; everything else untouched."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [to_device(v, device) for v in batch]
    return batch


@torch.no_grad()
def evaluate(model, loader, device, autocast, seed: int, max_batches: int | None) -> dict:
    """Mean of every loss (`loss/<name>`) and metric over the validation loader (NaNs ignored).

    The global torch generator is forked and seeded, so validating leaves training randomness —
    and hence exact resumption — untouched. The model is back in train mode afterwards.
    """
    model.eval()
    values: dict[str, list] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for b, batch in enumerate(loader):
            if max_batches and b >= max_batches:
                break
            batch = to_device(batch, device)
            with autocast():
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
    return results


def load_history(exp_dir: Path, up_to_step: int) -> list[dict]:
    """The validations of a resumed run up to its checkpoint's step (later ones are redone)."""
    path = Path(exp_dir) / HISTORY
    if not path.exists():
        return []
    return [h for h in json.loads(path.read_text()) if h["step"] <= up_to_step]


def write_history(exp_dir: Path, history: list[dict]) -> None:
    """`val_history.json` and its picture `val_curves.png`, both replaced atomically."""
    exp_dir = Path(exp_dir)
    atomic_write_text(exp_dir / HISTORY, json.dumps(history, indent=1))
    plot_validation_history(history, exp_dir / CURVES, title=f"validation: {exp_dir.name}")


def is_better(results: dict, key: str, mode: str, best: float | None) -> bool:
    """Whether `results[key]` beats `best` (min or max mode); NaN never does."""
    if key not in results:
        raise ConfigError(
            f"train.best_key '{key}' is not a validation metric; "
            f"available: {', '.join(sorted(results))}"
        )
    v = results[key]
    better = best is None or (v < best if mode == "min" else v > best)
    return math.isfinite(v) and better


def summary(results: dict, key: str) -> str:
    """The few numbers worth a log line."""
    shown = dict.fromkeys((key, "loss/total", "match_recall", "match_precision", "epe", "pck@3"))
    return ", ".join(f"{k} {results[k]:.4g}" for k in shown if k in results)
