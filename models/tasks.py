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

This module is plain data (no torch): the service checks requests against it without loading the
model's libraries. The masks and condition videos are made by `models/masks.py`, which the mask
methods below import when first called.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Task codes in the order that fixes their task-token ids; never reorder.
TASK_CODES: tuple[str, ...] = ("fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp")


class Region(StrEnum):
    """Which part of the video a task knows (the masks: `models/masks.py`)."""

    FIRST_FRAMES = "first_frames"  # the first cond_frames frames
    FIRST_AND_LAST = "first_and_last"  # one frame at each end
    BOX = "box"  # a central box, H/4..3H/4 x W/4..3W/4
    VERTICAL_BAND = "vertical_band"  # a central band of half the width
    HORIZONTAL_BAND = "horizontal_band"  # a central band of half the height
    MOVING_BAND = "moving_band"  # a vertical band of half the width sweeping 0 -> W/2
    MOVING_HOLE = "moving_hole"  # everything but a central-height box sweeping 0 -> W/2
    INVERSE_BOX = "inverse_box"  # everything but the central box
    NOTHING = "nothing"


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
        return self.region is Region.FIRST_FRAMES

    def pixel_mask(self, t: int, h: int, w: int, cond_frames: int) -> torch.Tensor:
        """[T, H, W] bool, True where the condition video holds real pixels."""
        from models.masks import region_mask

        return region_mask(self.region, t, h, w, cond_frames)

    def token_mask(self, t: int, h: int, w: int, cond_latent_frames: int) -> torch.Tensor:
        """[t, h, w] bool, True where tokens come from the condition (segment 1)."""
        from models.masks import region_mask

        return region_mask(self.region, t, h, w, cond_latent_frames)

    def num_input_frames(self, num_frames: int, cond_frames: int) -> int:
        """How many frames of the user's clip the task reads: from its start, except for
        frame prediction, which reads the frames it conditions on (by default the clip's last)."""
        if not self.needs_video:
            return 0
        return cond_frames if self.conditions_on_frames else num_frames

    def condition_video(self, video: torch.Tensor, cond_frames: int) -> torch.Tensor:
        """The known content of `video` [B, C, T, H, W], padded per the task's rule."""
        from models.masks import condition_video

        return condition_video(self, video, cond_frames)


TASKS: dict[str, Task] = {
    task.code: task
    for task in (
        Task(
            "fp",
            "frame prediction",
            "Predict what happens next, from the clip's last frames.",
            Region.FIRST_FRAMES,
            "edge",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "fi",
            "frame interpolation",
            "Fill in the frames between the first and the last.",
            Region.FIRST_AND_LAST,
            "blend",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "opc",
            "outpainting, central",
            "Extend a central box outwards to the full frame.",
            Region.BOX,
            "edge",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "opv",
            "outpainting, vertical",
            "Extend a central vertical band left and right.",
            Region.VERTICAL_BAND,
            "edge",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "oph",
            "outpainting, horizontal",
            "Extend a central horizontal band up and down.",
            Region.HORIZONTAL_BAND,
            "edge",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "opd",
            "outpainting, dynamic",
            "Extend a vertical band that sweeps left to right.",
            Region.MOVING_BAND,
            "zeros",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "ipc",
            "inpainting, central",
            "Fill in a missing central box.",
            Region.INVERSE_BOX,
            "zeros",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "ipd",
            "inpainting, dynamic",
            "Fill in a missing box that moves left to right.",
            Region.MOVING_HOLE,
            "zeros",
            needs_video=True,
            needs_class=False,
        ),
        Task(
            "cg",
            "class-conditional generation",
            "Generate a video of a class from nothing.",
            Region.NOTHING,
            "zeros",
            needs_video=False,
            needs_class=True,
        ),
        Task(
            "cfp",
            "class-conditional frame prediction",
            "Predict the future of a class.",
            Region.FIRST_FRAMES,
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
