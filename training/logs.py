"""Training output: metrics as JSONL, loss curves and sample grids as PNG (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def truncate_after(self, step: int) -> None:
        """On resume, forget records past the checkpoint so the log has no duplicates."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def plot_curves(records: list[dict], keys: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            steps, values = zip(*pts, strict=True)
            ax.plot(steps, values, lw=0.8)
            if min(values) > 0:
                ax.set_yscale("log")
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_grid(rows: list[tuple[str, torch.Tensor]], path: Path, frames: int = 8) -> None:
    """One row per (label, video [3, T, H, W]) with `frames` evenly spaced frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(rows), frames, figsize=(frames * 1.2, len(rows) * 1.3), squeeze=False
    )
    for r, (label, video) in enumerate(rows):
        t = video.shape[1]
        for c, i in enumerate(np.linspace(0, t - 1, frames).round().astype(int)):
            ax = axes[r, c]
            ax.imshow(video[:, i].permute(1, 2, 0).clamp(0, 1).float().cpu().numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
            if r == 0:
                ax.set_title(f"t={i}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
