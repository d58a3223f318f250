"""Evaluation: tokenizer reconstruction (PSNR, SSIM) next to bicubic upsampling from the token
grid's size, each task's error inside the region it generates against a simple baseline, and
the Fréchet distance (FVD given I3D features).

Shapes: videos [B, 3, T, H, W] in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.options import DecodeOptions
from models.pipeline import MagvitPipeline
from models.tasks import get_task
from models.tokenizer import VQTokenizer


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float(), b.float()).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # [1, 1, k, k]


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM over frames and channels (Gaussian window 11, sigma 1.5, data range 1)."""
    c1, c2 = 0.01**2, 0.03**2

    def frames(v):  # [B, C, T, H, W] -> [B*C*T, 1, H, W]
        return v.float().permute(0, 1, 2, 3, 4).reshape(-1, 1, *v.shape[-2:])

    x, y = frames(a), frames(b)
    w = _gaussian_window(min(11, x.shape[-1], x.shape[-2]) | 1).to(x)
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean().item()


def bicubic_baseline(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each frame of `video` [B, 3, T, H, W] shrunk to `size` (bicubic, antialiased) and enlarged
    back to H x W (bicubic), clipped to [0, 1]: the reconstruction a tokenizer whose token grid
    is `size` should beat (16 x 16 for the 64 x 64 presets)."""
    b, c, t, h, w = video.shape
    frames = video.float().transpose(1, 2).reshape(b * t, c, h, w)
    small = F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)
    back = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return back.reshape(b, t, c, h, w).transpose(1, 2)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D]:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    from scipy import linalg

    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    s_a = np.cov(feats_a, rowvar=False)
    s_b = np.cov(feats_b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular: regularise
        eps = np.eye(s_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def fvd_from_files(real: Path, fake: Path) -> float:
    """FVD from I3D features saved as npz (array `features` [N, D]) for real and generated."""
    with np.load(real, allow_pickle=False) as r, np.load(fake, allow_pickle=False) as f:
        return frechet_distance(r["features"].astype(np.float64), f["features"].astype(np.float64))


def _batches(dataset, num_clips: int, batch_size: int):
    """(index of the first clip, videos [B, 3, T, H, W], labels) over the first `num_clips`."""
    for start in tqdm(range(0, num_clips, batch_size), desc="evaluating"):
        items = [dataset[i] for i in range(start, min(num_clips, start + batch_size))]
        yield start, torch.stack([v for v, _ in items]), [label for _, label in items]


def _mean_report(sums: dict[str, list[float]], num_clips: int) -> dict:
    report: dict[str, dict[str, float]] = {}
    for key, values in sums.items():
        group, name = key.split("/")
        report.setdefault(group, {})[name] = float(np.mean(values))
    report["num_clips"] = num_clips  # type: ignore[assignment]
    return report


def _add_reconstruction(
    sums: dict[str, list[float]], tokenizer: VQTokenizer, video: torch.Tensor, dtype: torch.dtype
) -> None:
    device = next(tokenizer.parameters()).device
    x = video.to(device, dtype)
    if tokenizer.cfg.conv_dim == 2:  # an image tokenizer: every frame on its own
        x = x.transpose(1, 2).flatten(0, 1)  # [B, 3, T, H, W] -> [B*T, 3, H, W]
    recon = tokenizer.decode(tokenizer.encode(x)).float().clamp(0, 1).cpu()
    if tokenizer.cfg.conv_dim == 2:
        recon = recon.unflatten(0, (video.shape[0], -1)).transpose(1, 2)  # back to clips
    sums.setdefault("tokenizer/psnr", []).append(psnr(recon, video))
    sums.setdefault("tokenizer/ssim", []).append(ssim(recon, video))


# Flat clips of everyday colours: white (an overexposed window), black, grey, skin, sky, a red,
# a green and a deep blue. A tokenizer that has seen one film's palette only gets them wrong
# (`training/augment.py`).
FLAT_COLOURS = (
    (0.95, 0.95, 0.95),
    (0.05, 0.05, 0.05),
    (0.5, 0.5, 0.5),
    (0.85, 0.65, 0.55),
    (0.55, 0.75, 0.95),
    (0.75, 0.1, 0.1),
    (0.2, 0.6, 0.2),
    (0.1, 0.2, 0.8),
)


@torch.no_grad()
def flat_colour_errors(tokenizer: VQTokenizer, dtype: torch.dtype = torch.float32) -> dict:
    """How far the reconstruction of each `FLAT_COLOURS` clip is from its colour: the mean
    absolute error per channel, averaged over the colours ("flat_colour_error") and the worst
    colour's ("flat_colour_worst")."""
    device = next(tokenizer.parameters()).device
    cfg = tokenizer.cfg
    size = (2 * cfg.temporal_factor, 64, 64) if cfg.conv_dim == 3 else (64, 64)
    colours = torch.tensor(FLAT_COLOURS).view(len(FLAT_COLOURS), 3, *[1] * len(size))
    x = colours.expand(-1, -1, *size).to(device, dtype).contiguous()  # one clip per colour
    recon = tokenizer.decode(tokenizer.encode(x)).float().clamp(0, 1).cpu()
    errors = (recon - colours).abs().flatten(1).mean(1).tolist()
    return {"flat_colour_error": float(np.mean(errors)), "flat_colour_worst": max(errors)}


@torch.no_grad()
def evaluate_tokenizer(
    tokenizer: VQTokenizer,
    dataset,
    num_clips: int,
    batch_size: int = 4,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Reconstruction metrics of a tokenizer alone (in eval mode) on the first `num_clips` clips
    of `dataset`: the same figures as the "tokenizer" part of `evaluate`, and for scale those
    of `bicubic_baseline` from the token grid's size (`bicubic_HxW`)."""
    sums: dict[str, list[float]] = {}
    factor = tokenizer.cfg.spatial_factor
    for _, video, _ in _batches(dataset, num_clips, batch_size):
        _add_reconstruction(sums, tokenizer, video, dtype)
        size = (video.shape[-2] // factor, video.shape[-1] // factor)
        baseline = bicubic_baseline(video, size)
        name = f"bicubic_{size[0]}x{size[1]}"
        sums.setdefault(f"{name}/psnr", []).append(psnr(baseline, video))
        sums.setdefault(f"{name}/ssim", []).append(ssim(baseline, video))
    report = _mean_report(sums, num_clips)
    report["tokenizer"].update(flat_colour_errors(tokenizer, dtype))
    return report


@torch.no_grad()
def evaluate(
    pipe: MagvitPipeline,
    dataset,
    num_clips: int,
    seed: int = 0,
    options: DecodeOptions = DecodeOptions(),
    batch_size: int = 4,
    tasks: Sequence[str] | None = None,
) -> dict:
    """Metrics on the first `num_clips` clips of `dataset` (held-out data), for `tasks` (default:
    every task of the checkpoint). Per task: MSE in the generated region and its baseline's, and
    the whole clip's PSNR without pasting the condition pixels back (as the official evaluation)
    and with them pasted (as the service answers by default)."""
    cfg = pipe.config
    tasks = cfg.tasks if tasks is None else tasks
    t, h, w = cfg.video_shape
    sums: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        sums.setdefault(key, []).append(value)

    for start, video, labels in _batches(dataset, num_clips, batch_size):
        _add_reconstruction(sums, pipe.tokenizer, video, pipe.dtype)
        seeds = [seed + start + i for i in range(len(labels))]
        for code in tasks:
            task = get_task(code)
            # Generated once without pasting (the official evaluation's output); the service's
            # default pastes the condition pixels back, which changes only the kept region.
            out = pipe.generate(
                code,
                video if task.needs_video else None,
                labels,
                seeds,
                options,
                paste_condition=False,
            )
            if not task.needs_video:
                continue
            kept = task.pixel_mask(t, h, w, cfg.cond_frames)
            region = ~kept  # what the task generates
            err = (out - video).pow(2)[..., region].mean().item()
            add(f"{code}/mse", err)
            pasted = torch.where(kept, video, out)
            add(f"{code}/psnr_unpasted", psnr(out, video))
            add(f"{code}/psnr_pasted", psnr(pasted, video))
            baseline = task.condition_video(video, cfg.cond_frames)
            add(
                f"{code}/{_baseline_name(code)}_mse",
                (baseline - video).pow(2)[..., region].mean().item(),
            )
    report = _mean_report(sums, num_clips)
    report["tokenizer"].update(flat_colour_errors(pipe.tokenizer, pipe.dtype))
    return report


@torch.no_grad()
def task_samples(
    pipe: MagvitPipeline,
    video: torch.Tensor,
    label: int,
    seed: int = 0,
    options: DecodeOptions = DecodeOptions(),
) -> list[tuple[str, torch.Tensor]]:
    """One sample per task the model serves, for a picture: the real clip [3, T, H, W], then
    for each task its condition (what the model was given) and its output."""
    cfg = pipe.config
    rows = [(f"real (class {label})", video)]
    for code in cfg.tasks:
        task = get_task(code)
        out = pipe.generate(
            code, video[None] if task.needs_video else None, [label], [seed], options
        )[0]
        if task.needs_video:
            rows.append((f"{code} input", task.condition_video(video[None], cfg.cond_frames)[0]))
        rows.append((f"{code} output", out))
    return rows


def _baseline_name(code: str) -> str:
    """The condition video's padding is the baseline: for frame prediction it repeats the last
    given frame (copy-last-frame), for interpolation it blends, elsewhere it is edge/zero fill."""
    task = get_task(code)
    if task.conditions_on_frames:
        return "copy_last_frame"
    return {"blend": "linear_blend", "edge": "edge_fill", "zeros": "zero_fill"}[task.padding]
