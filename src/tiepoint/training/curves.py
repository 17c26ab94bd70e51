"""Validation curves of one or more experiments in one figure (from their `val_history.json`)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def plot_validation_curves(
    experiments: dict[str, str | os.PathLike],
    out: str | os.PathLike,
    keys=("match_recall", "match_precision", "average_precision"),
) -> Path:
    """`experiments`: label → experiment folder. Writes a PNG with one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for label, exp in experiments.items():
        hist = json.loads((Path(exp) / "val_history.json").read_text())
        steps = [h["step"] for h in hist]
        for ax, k in zip(axes[0], keys):
            ax.plot(steps, [h.get(k, float("nan")) for h in hist], marker="o", ms=3, label=label)
    for ax, k in zip(axes[0], keys):
        ax.set_title(f"validation {k.replace('_', ' ')}")
        ax.set_xlabel("training step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out
