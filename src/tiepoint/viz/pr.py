"""Precision-recall curves with iso-F1 contours, as Glue Factory draws its ETH3D results."""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .matches import save_figure


def iso_f_curve(f: float, num: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Points (recall, precision) with F1 = f: precision = f·r / (2r − f), where positive."""
    r = np.linspace(0.01, 1, num)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = f * r / (2 * r - f)
    ok = (p >= 0) & (p <= 1) & np.isfinite(p)
    return r[ok], p[ok]


def plot_pr_curves(
    results: Mapping[str, Mapping],
    path: str | os.PathLike | None = None,
    suffix: str = "",
    title: str | None = None,
):
    """One curve per method from its `curve_recall{suffix}` / `curve_precision{suffix}`,
    labelled with `AP{suffix}`; iso-F1 lines for F = 0.2 … 0.9."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for f in np.linspace(0.2, 0.9, 8):
        r, p = iso_f_curve(f)
        ax.plot(r, p, color=(0, 0.5, 0), alpha=0.3)
        if len(p):
            ax.annotate(f"f={f:.1f}", xy=(0.9, p[-1] + 0.02), alpha=0.4, fontsize=9)
    for name, res in results.items():
        ax.plot(
            res[f"curve_recall{suffix}"],
            res[f"curve_precision{suffix}"],
            label=f"{name}: {res[f'AP{suffix}']:.1f}",
        )
    ax.grid(True)
    ax.set(xlim=(0, 1), ylim=(0.3, 1), xlabel="Recall", ylabel="Precision")
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    if path is not None:
        save_figure(fig, path)
    return fig
