"""Curves: cumulative error curves (recall vs error threshold, the picture behind every AUC number)
and training validation curves (metrics over training steps, from `val_history.json`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .matches import save_figure


def cumulative_curve(errors: Sequence[float], x_max: float, num: int = 400):
    """(x, recall(x)) with recall(x) = fraction of pairs whose error is ≤ x; failures never count."""
    e = np.sort(np.asarray(errors, np.float64))
    x = np.linspace(0, x_max, num)
    return x, np.searchsorted(e, x, side="right") / max(len(e), 1)


def plot_cumulative(
    ax, curves: Mapping[str, Sequence[float]], x_max: float, unit: str, title: str = ""
):
    for label, errors in curves.items():
        x, r = cumulative_curve(errors, x_max)
        ax.plot(x, 100 * r, lw=2, label=f"{label} ({len(errors)} pairs)")
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 100)
    ax.set_xlabel(f"error threshold ({unit})")
    ax.set_ylabel("recall (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)


def save_cumulative(panels: Sequence[dict], path: str | os.PathLike, dpi: int = 110) -> Path:
    """One PNG with a panel per dict(curves=…, x_max=…, unit=…, title=…); written atomically."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        plot_cumulative(ax, **panel)
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi, tight=False)
    return Path(path)


MATCH_KEYS = ("match_recall", "match_precision", "average_precision")
DENSE_KEYS = ("pck@1", "pck@3", "pck@5")  # dense models (DenseTwoViewPipeline)


def plot_validation_history(history: Sequence[dict], path: str | os.PathLike, title: str) -> Path:
    """One experiment's validation over steps: matching metrics or dense PCKs (left), validation
    loss (right)."""
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for k in MATCH_KEYS + DENSE_KEYS:
        if any(k in h for h in history):
            ax[0].plot(steps, [h.get(k, np.nan) for h in history], marker="o", ms=3, label=k)
    ax[0].set_xlabel("training step")
    ax[0].set_ylim(0, 1)
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    ax[0].set_title(title)
    loss = [h.get("loss/total", np.nan) for h in history]
    ax[1].plot(steps, loss, marker="o", ms=3, color="k")
    ax[1].set_xlabel("training step")
    ax[1].set_ylabel("validation loss")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110, tight=False)
    return Path(path)


def plot_validation_curves(
    experiments: Mapping[str, str | os.PathLike], out: str | os.PathLike, keys=MATCH_KEYS
) -> Path:
    """Several experiments in one figure: `experiments` maps label → experiment folder (its
    `val_history.json`); one panel per metric."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for label, exp in experiments.items():
        hist = json.loads((Path(exp) / "val_history.json").read_text())
        steps = [h["step"] for h in hist]
        for ax, k in zip(axes[0], keys):
            ax.plot(steps, [h.get(k, np.nan) for h in hist], marker="o", ms=3, label=label)
    for ax, k in zip(axes[0], keys):
        ax.set_title(f"validation {k.replace('_', ' ')}")
        ax.set_xlabel("training step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, out, dpi=110, tight=False)
    return Path(out)
