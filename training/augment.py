"""Colour augmentation of training clips (the tokenizer's, and the clips whose tokens the
transformer trainer caches).

A tokenizer trained on one film learns that film's palette: the `video64` tokenizer trained on
the film's frames alone reconstructs a flat white frame as green (0.15, 0.93, 0.53) and a blue
one as pale cyan, and on real camera footage (overexposed windows, white shirts, blue seats)
casts everything green. `ColourJitter` gives the tokenizer other palettes and the flat,
clipped regions that real cameras make: half the clips (per item, reproducibly) get one colour
transform for all their frames: a rotation of the chroma plane (hue), a chroma scale
(saturation, down to grey), a contrast and brightness change; values are clipped to [0, 1], so
raised contrast saturates highlights into flat regions as an overexposed camera does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# RGB -> YIQ (NTSC): luma and two chroma axes, so a hue change is a rotation of (I, Q).
_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_RGB = torch.linalg.inv(_YIQ)
JITTERED_SHARE = 0.5  # the rest of the clips keep the film's own colours


@dataclass(frozen=True)
class ColourTransform:
    hue: float = 0.0  # radians: rotation of the chroma plane
    saturation: float = 1.0  # chroma scale (0: grey)
    contrast: float = 1.0  # scale about mid-grey
    brightness: float = 0.0  # offset

    def matrix(self) -> torch.Tensor:
        """The linear part in RGB [3, 3] (float64): hue and saturation."""
        c, s = math.cos(self.hue), math.sin(self.hue)
        chroma = torch.tensor(
            [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64
        ) @ torch.diag(torch.tensor([1.0, self.saturation, self.saturation], dtype=torch.float64))
        return _RGB @ chroma @ _YIQ

    def apply(self, clip: torch.Tensor) -> torch.Tensor:
        """`clip` [3, T, H, W] in [0, 1] -> the same shape and range."""
        m = self.matrix().to(clip.dtype)
        out = torch.einsum("ij,j...->i...", m, clip)
        out = (out - 0.5) * self.contrast + 0.5 + self.brightness
        return out.clamp(0.0, 1.0)


def draw(rng: np.random.Generator, strength: float) -> ColourTransform:
    """A random transform; `strength` in [0, 1] scales every range (1: any hue, saturation
    0.25-2x, contrast 0.7-2x, brightness +-0.2)."""
    if rng.random() >= JITTERED_SHARE:
        return ColourTransform()
    u = rng.uniform(-1.0, 1.0, size=4) * strength
    return ColourTransform(
        hue=float(u[0] * math.pi),
        saturation=float(2.0 ** (u[1] * (2.0 if u[1] < 0 else 1.0))),
        contrast=float(2.0 ** (u[2] * (0.5 if u[2] < 0 else 1.0))),
        brightness=float(u[3] * 0.2),
    )


class ColourJitter(torch.utils.data.Dataset):
    """`dataset`'s clips under a colour transform drawn from (seed, index) alone, so a batch is
    still a function of its indices."""

    def __init__(self, dataset, strength: float, seed: int = 0) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"colour jitter strength must be in [0, 1], not {strength}")
        self.dataset, self.strength, self.seed = dataset, strength, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def transform(self, index: int) -> ColourTransform:
        return draw(np.random.default_rng([0xC0105, self.seed, index]), self.strength)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip, label = self.dataset[index]
        return self.transform(index).apply(clip), label
