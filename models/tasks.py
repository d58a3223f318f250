"""The ten MAGVIT tasks as data (spec section 5).

A task is a region (which part of the video is known) and a padding rule (what fills the rest of
the condition video before it is tokenized). The same region function gives the mask in pixels
(T x H x W) and in tokens (t x h x w): the geometry is defined in fractions of the grid, so the
token mask is the pixel mask at the latent resolution. Masks are True where content is known
(the condition).

Shapes: B batch, C channels, T frames, H height, W width; videos are [B, C, T, H, W] in [0, 1].
The pixel geometry matches the official task definitions (checked against the reference file in
tests/test_tasks.py): boxes span H/4..3H/4, bands have half the width, and a dynamic band's left
edge moves linearly from 0 to W/2, rounded to the nearest pixel (or token) per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Task codes in the order that fixes their task-token ids; never reorder.
TASK_CODES: tuple[str, ...] = ("fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp")

# A region maps (T, H, W, cond_frames) to a bool mask [T, H, W] (True = known).
Region = Callable[[int, int, int, int], torch.Tensor]


def _first_frames(t: int, h: int, w: int, n: int) -> torch.Tensor:
    mask = torch.zeros(t, h, w, dtype=torch.bool)
    mask[:n] = True
    return mask


def _first_and_last_frames(t: int, h: int, w: int, n: int) -> torch.Tensor:
    # Interpolation always knows exactly one frame (one latent frame) at each end, whatever
    # cond_frames says: with 5 frames per side a 4-latent-frame clip would be fully known.
    mask = torch.zeros(t, h, w, dtype=torch.bool)
    mask[0] = True
    mask[-1] = True
    return mask


def _central(size: int) -> slice:
    return slice(size // 4, size - size // 4)


def _box(t: int, h: int, w: int, n: int) -> torch.Tensor:
    mask = torch.zeros(t, h, w, dtype=torch.bool)
    mask[:, _central(h), _central(w)] = True
    return mask


def _vertical_band(t: int, h: int, w: int, n: int) -> torch.Tensor:
    mask = torch.zeros(t, h, w, dtype=torch.bool)
    mask[:, :, _central(w)] = True
    return mask


def _horizontal_band(t: int, h: int, w: int, n: int) -> torch.Tensor:
    mask = torch.zeros(t, h, w, dtype=torch.bool)
    mask[:, _central(h), :] = True
    return mask


def _moving_left_edges(t: int, w: int) -> list[int]:
    """Left edge per frame of a band of width w/2 sweeping from 0 to w/2."""
    half = w // 2
    return [round(i * half / max(t - 1, 1)) for i in range(t)]


def _moving_band(t: int, h: int, w: int, n: int) -> torch.Tensor:
    mask = torch.zeros(t, h, w, dtype=torch.bool)
    for i, left in enumerate(_moving_left_edges(t, w)):
        mask[i, :, left : left + w // 2] = True
    return mask


def _moving_hole(t: int, h: int, w: int, n: int) -> torch.Tensor:
    mask = torch.ones(t, h, w, dtype=torch.bool)
    for i, left in enumerate(_moving_left_edges(t, w)):
        mask[i, _central(h), left : left + w // 2] = False
    return mask


def _inverse_box(t: int, h: int, w: int, n: int) -> torch.Tensor:
    return ~_box(t, h, w, n)


def _nothing(t: int, h: int, w: int, n: int) -> torch.Tensor:
    return torch.zeros(t, h, w, dtype=torch.bool)


@dataclass(frozen=True)
class Task:
    code: str
    name: str
    description: str
    region: Region
    # How the unknown part of the condition video is filled before tokenization:
    # "edge" repeats the nearest known pixel (frame for FP, border for outpainting), "blend"
    # interpolates linearly between the first and last frames, "zeros" leaves black.
    padding: str
    needs_video: bool
    needs_class: bool

    @property
    def index(self) -> int:
        return TASK_CODES.index(self.code)

    @property
    def conditions_on_frames(self) -> bool:
        """FP-like tasks: the condition is a prefix of frames (counted in cond_frames)."""
        return self.region is _first_frames

    def pixel_mask(self, t: int, h: int, w: int, cond_frames: int) -> torch.Tensor:
        """[T, H, W] bool, True where the condition video holds real pixels."""
        return self.region(t, h, w, cond_frames)

    def token_mask(self, t: int, h: int, w: int, cond_latent_frames: int) -> torch.Tensor:
        """[t, h, w] bool, True where tokens come from the condition (segment 1)."""
        return self.region(t, h, w, cond_latent_frames)

    def num_input_frames(self, num_frames: int, cond_frames: int) -> int:
        """How many frames of the user's clip the task reads: from its start, except for
        frame prediction, which reads the frames it conditions on (by default the clip's last)."""
        if not self.needs_video:
            return 0
        return cond_frames if self.conditions_on_frames else num_frames

    def condition_video(self, video: torch.Tensor, cond_frames: int) -> torch.Tensor:
        """The known content of `video` [B, C, T, H, W], padded per the task's rule."""
        b, c, t, h, w = video.shape
        if not self.needs_video:
            return torch.zeros_like(video)
        if self.padding == "edge" and self.conditions_on_frames:
            last = video[:, :, cond_frames - 1 : cond_frames]  # [B, C, 1, H, W]
            return torch.cat(
                [video[:, :, :cond_frames], last.expand(-1, -1, t - cond_frames, -1, -1)], 2
            )
        if self.padding == "blend":
            # Official FI pads with a linear blend between the first and the last frame.
            alpha = torch.linspace(0, 1, t, dtype=video.dtype, device=video.device)
            alpha = alpha.view(1, 1, t, 1, 1)
            return (1 - alpha) * video[:, :, :1] + alpha * video[:, :, -1:]
        mask = self.pixel_mask(t, h, w, cond_frames).to(video.device)
        if self.padding == "zeros":
            return torch.where(mask, video, torch.zeros((), dtype=video.dtype, device=video.device))
        if self.padding == "edge":
            return _edge_pad_box(video, mask[0])
        raise ValueError(f"unknown padding {self.padding!r}")


def _edge_pad_box(video: torch.Tensor, mask_hw: torch.Tensor) -> torch.Tensor:
    """Replicate the border of the known rectangle `mask_hw` [H, W] outwards (np.pad 'edge')."""
    rows = torch.nonzero(mask_hw.any(1)).flatten()
    cols = torch.nonzero(mask_hw.any(0)).flatten()
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    h, w = mask_hw.shape
    inner = video[..., r0:r1, c0:c1]
    return torch.nn.functional.pad(
        inner.flatten(0, 1), (c0, w - c1, r0, h - r1), mode="replicate"
    ).view(video.shape)


TASKS: dict[str, Task] = {
    task.code: task
    for task in (
        Task(
            "fp",
            "frame prediction",
            "Predict the future from the first frames.",
            _first_frames,
            "edge",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "fi",
            "frame interpolation",
            "Fill in the frames between the first and the last.",
            _first_and_last_frames,
            "blend",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "opc",
            "outpainting, central",
            "Extend a central box outwards to the full frame.",
            _box,
            "edge",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "opv",
            "outpainting, vertical",
            "Extend a central vertical band left and right.",
            _vertical_band,
            "edge",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "oph",
            "outpainting, horizontal",
            "Extend a central horizontal band up and down.",
            _horizontal_band,
            "edge",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "opd",
            "outpainting, dynamic",
            "Extend a vertical band that sweeps left to right.",
            _moving_band,
            "zeros",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "ipc",
            "inpainting, central",
            "Fill in a missing central box.",
            _inverse_box,
            "zeros",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "ipd",
            "inpainting, dynamic",
            "Fill in a missing box that moves left to right.",
            _moving_hole,
            "zeros",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "cg",
            "class-conditional generation",
            "Generate a video of a class from nothing.",
            _nothing,
            "zeros",
            needs_video=False,
            needs_class=True,
        ),
        Task(
            "cfp",
            "class-conditional frame prediction",
            "Predict the future of a class.",
            _first_frames,
            "edge",
            needs_video=True,
            needs_class=True,
        ),
    )
}
assert tuple(TASKS) == TASK_CODES


def get_task(code: str) -> Task:
    try:
        return TASKS[code.lower()]
    except KeyError:
        raise KeyError(f"unknown task {code!r}; choose one of {', '.join(TASK_CODES)}") from None
