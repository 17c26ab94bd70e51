"""Cumulative error curves (recall vs error threshold), the picture behind every AUC number."""

from __future__ import annotations

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
