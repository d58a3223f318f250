"""Choosing a dataset by name ("synthetic" or a folder of videos, `data/videos.py`) and
reading it in batches, optionally in worker processes so that a GPU is not left waiting on clip
generation or decoding. Which clips make a batch never depends on the number of workers."""

from __future__ import annotations

from pathlib import Path

import torch

from models.config import ModelConfig
from training.data.synthetic import SyntheticVideos

SYNTHETIC_TRAIN_CLIPS = 1_000_000  # indices drawn per step; clips are generated on demand


def make_dataset(
    data: str,
    config: ModelConfig,
    split: str = "train",
    num_clips: int | None = None,
    frame_stride: int | None = None,
) -> torch.utils.data.Dataset:
    """Clips of the model's frames and size, with labels. Splits: train, eval, and for a folder
    also all (every window of every video); `frame_stride` overrides a folder's manifest."""
    t, h, w = config.video_shape
    if data == "synthetic":
        if h != w:
            raise ValueError("the synthetic dataset makes square frames")
        n = num_clips or (SYNTHETIC_TRAIN_CLIPS if split == "train" else 256)
        return SyntheticVideos(
            n, num_frames=t, size=h, split="train" if split == "train" else "eval"
        )
    from training.data.videos import VideoWindows

    return VideoWindows(Path(data), config, split=split, limit=num_clips, frame_stride=frame_stride)


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """videos [B, 3, T, H, W], labels [B]."""
    return torch.stack([v for v, _ in items]), torch.tensor([label for _, label in items])


class _Batches(torch.utils.data.Dataset):
    """Item k is the batch made of the clips `index_lists[k]`."""

    def __init__(self, dataset, index_lists: list[list[int]]) -> None:
        self.dataset, self.index_lists = dataset, index_lists

    def __len__(self) -> int:
        return len(self.index_lists)

    def __getitem__(self, k: int):
        return _collate([self.dataset[i] for i in self.index_lists[k]])


def iter_batches(dataset, index_lists: list[list[int]], workers: int = 0, pin: bool = False):
    """Yields (videos, labels) on the CPU for each list of clip indices, in order; with
    `workers` > 0 the batches are made ahead in that many processes."""
    loader = torch.utils.data.DataLoader(
        _Batches(dataset, index_lists),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    yield from loader
