"""The tasks' masks and condition videos in torch (the tasks themselves: `models/tasks.py`).

Masks are bool [T, H, W] (pixels) or [t, h, w] (tokens), True where content is known; the same
region function serves both because the geometry is in fractions of the grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.tasks import Region, Task


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


_REGIONS: dict[Region, Callable[[int, int, int, int], torch.Tensor]] = {
    Region.FIRST_FRAMES: _first_frames,
    Region.FIRST_AND_LAST: _first_and_last_frames,
    Region.BOX: _box,
    Region.VERTICAL_BAND: _vertical_band,
    Region.HORIZONTAL_BAND: _horizontal_band,
    Region.MOVING_BAND: _moving_band,
    Region.MOVING_HOLE: _moving_hole,
    Region.INVERSE_BOX: _inverse_box,
    Region.NOTHING: _nothing,
}


def region_mask(region: Region, t: int, h: int, w: int, cond_frames: int) -> torch.Tensor:
    """[t, h, w] bool, True where `region` is known (`cond_frames`: frames of a prefix)."""
    return _REGIONS[region](t, h, w, cond_frames)


def condition_video(task: Task, video: torch.Tensor, cond_frames: int) -> torch.Tensor:
    """The known content of `video` [B, C, T, H, W], padded per the task's rule."""
    b, c, t, h, w = video.shape
    if not task.needs_video:
        return torch.zeros_like(video)
    if task.padding == "edge" and task.conditions_on_frames:
        last = video[:, :, cond_frames - 1 : cond_frames]  # [B, C, 1, H, W]
        return torch.cat(
            [video[:, :, :cond_frames], last.expand(-1, -1, t - cond_frames, -1, -1)], 2
        )
    if task.padding == "blend":
        # Official FI pads with a linear blend between the first and the last frame.
        alpha = torch.linspace(0, 1, t, dtype=video.dtype, device=video.device)
        alpha = alpha.view(1, 1, t, 1, 1)
        return (1 - alpha) * video[:, :, :1] + alpha * video[:, :, -1:]
    mask = region_mask(task.region, t, h, w, cond_frames).to(video.device)
    if task.padding == "zeros":
        return torch.where(mask, video, torch.zeros((), dtype=video.dtype, device=video.device))
    if task.padding == "edge":
        return _edge_pad_box(video, mask[0])
    raise ValueError(f"unknown padding {task.padding!r}")


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
