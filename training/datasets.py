"""Choosing a dataset by name: "synthetic" or a folder of class sub-folders of videos."""

from __future__ import annotations

from pathlib import Path

import torch

from models.config import ModelConfig
from training.data.synthetic import SyntheticVideos

SYNTHETIC_TRAIN_CLIPS = 1_000_000  # indices drawn per step; clips are generated on demand


def make_dataset(
    data: str, config: ModelConfig, split: str = "train", num_clips: int | None = None
) -> torch.utils.data.Dataset:
    """Clips of the model's frames and size, with labels."""
    t, h, w = config.video_shape
    if data == "synthetic":
        if h != w:
            raise ValueError("the synthetic dataset makes square frames")
        n = num_clips or (SYNTHETIC_TRAIN_CLIPS if split == "train" else 256)
        return SyntheticVideos(n, num_frames=t, size=h, split=split)
    from training.data.folder import FolderVideos

    return FolderVideos(Path(data), config, split=split, limit=num_clips)


def load_batch(dataset, indices: list[int], device: torch.device):
    """videos [B, 3, T, H, W], labels [B]."""
    items = [dataset[i] for i in indices]
    videos = torch.stack([v for v, _ in items]).to(device)
    labels = torch.tensor([label for _, label in items], device=device)
    return videos, labels
