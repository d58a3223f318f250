"""Synthetic videos with real motion, generated on the fly and deterministic by index.

Each clip shows sprites of one kind moving with constant velocity and bouncing off the borders
on a black background. Ten classes = five kinds of content x two kinds of motion:

    content: digits 0-4, digits 5-9 (scikit-learn's bundled 8x8 digits, upscaled), squares,
             discs, triangles
    motion:  mostly horizontal, mostly vertical

Clip i of the training split is drawn from seed i; the evaluation split uses seeds from
EVAL_SEED_OFFSET on, a range that training never reaches.

Shapes: videos are float [3, T, H, W] in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

EVAL_SEED_OFFSET = 1_000_000_000
NUM_CLASSES = 10
CONTENTS = ("digits 0-4", "digits 5-9", "squares", "discs", "triangles")
MOTIONS = ("horizontal", "vertical")
# Bright, saturated colours: easy to tell apart after tokenization.
PALETTE = np.array(
    [
        [1.0, 0.25, 0.25],
        [0.25, 1.0, 0.25],
        [0.3, 0.5, 1.0],
        [1.0, 1.0, 0.3],
        [1.0, 0.4, 1.0],
        [0.3, 1.0, 1.0],
        [1.0, 1.0, 1.0],
    ],
    dtype=np.float32,
)


def class_name(label: int) -> str:
    return f"{CONTENTS[label // 2]}, {MOTIONS[label % 2]}"


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with the package: no download

    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target


def _shape_mask(kind: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if kind == "squares":
        return np.ones((size, size), np.float32)
    if kind == "discs":
        r = size / 2
        return ((yy - r) ** 2 + (xx - r) ** 2 <= r * r).astype(np.float32)
    # Triangles: apex at the top centre.
    return (np.abs(xx - size / 2) <= yy / 2).astype(np.float32)


def _sprite(rng: np.random.Generator, content: int, size: int) -> np.ndarray:
    """A [size, size] alpha mask in [0, 1]."""
    kind = CONTENTS[content]
    if kind.startswith("digits"):
        images, targets = _digits()
        allowed = np.flatnonzero(targets < 5) if content == 0 else np.flatnonzero(targets >= 5)
        img = torch.from_numpy(images[rng.choice(allowed)])[None, None]
        up = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear")
        return up[0, 0].clamp(0, 1).numpy()
    return _shape_mask(kind, size)


@dataclass(frozen=True)
class SyntheticVideos(torch.utils.data.Dataset):
    """`num_clips` clips of `num_frames` x `size` x `size`; `split` is "train" or "eval"."""

    num_clips: int
    num_frames: int = 16
    size: int = 64
    split: str = "train"

    def __len__(self) -> int:
        return self.num_clips

    def seed(self, index: int) -> int:
        if not 0 <= index < self.num_clips:
            raise IndexError(index)
        return index + (EVAL_SEED_OFFSET if self.split == "eval" else 0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng(self.seed(index))
        label = int(rng.integers(NUM_CLASSES))
        return torch.from_numpy(render(rng, label, self.num_frames, self.size)), label


def render(rng: np.random.Generator, label: int, num_frames: int, size: int) -> np.ndarray:
    """One clip of class `label`: float32 [3, T, H, W]."""
    content, motion = divmod(label, 2)
    video = np.zeros((num_frames, size, size, 3), np.float32)
    for _ in range(int(rng.integers(1, 3))):
        sprite_size = int(rng.integers(size // 5, size // 3))
        alpha = _sprite(rng, content, sprite_size)[..., None]  # [s, s, 1]
        colour = PALETTE[rng.integers(len(PALETTE))]
        limit = size - sprite_size
        pos = rng.uniform(0, limit, size=2)  # (y, x)
        # Speeds in pixels per frame at 64 x 64, scaled with the frame: the same motion at any size.
        fast, slow = rng.uniform(1.5, 3.5) * size / 64, rng.uniform(-0.5, 0.5) * size / 64
        fast *= rng.choice([-1, 1])
        vel = np.array([slow, fast] if MOTIONS[motion] == "horizontal" else [fast, slow])
        for t in range(num_frames):
            y, x = np.round(pos).astype(int)
            patch = video[t, y : y + sprite_size, x : x + sprite_size]
            patch[:] = patch * (1 - alpha) + colour * alpha
            pos = pos + vel
            for d in range(2):  # bounce off the borders
                if pos[d] < 0 or pos[d] > limit:
                    vel[d] = -vel[d]
                    pos[d] = np.clip(pos[d], 0, limit) * 2 - pos[d]
                    pos[d] = np.clip(pos[d], 0, limit)
    return np.ascontiguousarray(video.transpose(3, 0, 1, 2))  # [T,H,W,C] -> [C,T,H,W]
