"""A folder of videos in class sub-folders (the UCF-101 layout), as model-sized clips.

    root/<class name>/<video file>

Classes are the sorted sub-folder names. Every tenth file (in sorted order) is held out for
evaluation. Decoded clips are cached on disk as npz (uint8, no pickle) under
`root/.magvit-cache/<T>x<H>x<W>/`, so each video is decoded once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from media import DecodeLimits, read_video
from media.npz import read_npz, write_npz
from models.config import ModelConfig
from models.pipeline import fit_clip

VIDEO_SUFFIXES = {".mp4", ".webm", ".gif", ".avi", ".mov", ".mkv"}
HOLDOUT_EVERY = 10


class FolderVideos(torch.utils.data.Dataset):
    def __init__(self, root: Path, config: ModelConfig, split: str = "train",
                 limit: int | None = None) -> None:  # fmt: skip
        if not root.is_dir():
            raise FileNotFoundError(f"no such folder: {root}")
        self.root = root
        self.shape = config.video_shape
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and
                              not p.name.startswith("."))  # fmt: skip
        if len(self.classes) > config.num_classes:
            raise ValueError(f"{len(self.classes)} classes, the model has {config.num_classes}")
        files = sorted(
            (f, label) for label, name in enumerate(self.classes)
            for f in (root / name).rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES
        )  # fmt: skip
        held_out = [x for i, x in enumerate(files) if i % HOLDOUT_EVERY == 0]
        kept = [x for i, x in enumerate(files) if i % HOLDOUT_EVERY != 0]
        self.items = (held_out if split == "eval" else kept)[:limit]
        if not self.items:
            raise ValueError(f"no {split} videos under {root}")
        t, h, w = self.shape
        self.cache = root / ".magvit-cache" / f"{t}x{h}x{w}"

    def __len__(self) -> int:
        return len(self.items)

    def frames(self, index: int) -> np.ndarray:
        path, _ = self.items[index]
        cached = self.cache / path.relative_to(self.root).with_suffix(".npz")
        if cached.is_file():
            return read_npz(cached.read_bytes())
        decoded = read_video(path, DecodeLimits(max_bytes=1 << 34, max_seconds=1e9),
                             max_frames=self.shape[0]).frames  # fmt: skip
        clip = (fit_clip(decoded, self.shape) * 255).round().byte().permute(1, 2, 3, 0).numpy()
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(write_npz(clip))
        tmp.replace(cached)
        return clip

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = torch.from_numpy(self.frames(index)).permute(3, 0, 1, 2).float() / 255.0
        return clip, self.items[index][1]
