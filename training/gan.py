"""Adversarial training of the tokenizer (spec section 3): the official StyleGAN 3D
discriminator (and its 2D variant, inflatable into it), the non-saturating loss, the R1 penalty
and LeCam regularisation.

Shapes: videos [B, 3, T, H, W]; discriminator logits [B].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _down(x: torch.Tensor) -> torch.Tensor:
    """The official `downsample`: 2x average pooling of every axis after channels (T too);
    an axis of size 1 stays (TF 'SAME' pooling of one cell is that cell)."""
    kernel = tuple(2 if size >= 2 else 1 for size in x.shape[2:])
    pool = F.avg_pool3d if x.dim() == 5 else F.avg_pool2d
    return pool(x, kernel)


def _conv(dims: int, c_in: int, c_out: int, k: int, bias: bool = True) -> nn.Module:
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    return conv(c_in, c_out, k, padding=k // 2, bias=bias)


class _DownBlock(nn.Module):
    """The official StyleGAN discriminator block: conv3 (c_in -> c_in) -> lrelu -> pool ->
    conv3 (c_in -> c_out) -> lrelu, plus pool -> 1x1 conv (no bias) as the skip; the sum is
    scaled by 1/sqrt(2). (No normalisation: the official config's norm_type is unset.)"""

    def __init__(self, c_in: int, c_out: int, dims: int = 3) -> None:
        super().__init__()
        self.conv1 = _conv(dims, c_in, c_in, 3)
        self.conv2 = _conv(dims, c_in, c_out, 3)
        self.skip = _conv(dims, c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _down(F.leaky_relu(self.conv1(x), 0.2))
        h = F.leaky_relu(self.conv2(h), 0.2)
        return (h + self.skip(_down(x))) / math.sqrt(2)


def _final_size(size: int, num_blocks: int) -> int:
    for _ in range(num_blocks):
        size = (size + 1) // 2 if size >= 2 else size
    return size


class Discriminator(nn.Module):
    """The official StyleGAN 3D discriminator (`stylegan_discriminator_3d.py`): conv3 3 -> f,
    lrelu; one block per channel multiplier (f * m channels out); conv3, lrelu; the final map
    flattened -> dense (f * m_last) -> lrelu -> dense (1).

    `dims=2` is the same network on single frames [B, 3, H, W] (for a 2D tokenizer); its weights
    inflate into the 3D one with `inflate_discriminator_2d`. `num_frames` fixes the clip length
    the dense head reads; None averages the final map over T first (any clip length, the
    spatial layout still flattened), which is what a 2D-inflated head does on a static clip.
    """

    def __init__(
        self,
        filters: int,
        frame_size: int | tuple[int, int],
        num_frames: int | None = None,
        channel_multipliers: tuple[int, ...] = (2, 4, 4, 4, 4),
        dims: int = 3,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError("dims must be 2 or 3")
        h, w = (frame_size, frame_size) if isinstance(frame_size, int) else frame_size
        n = len(channel_multipliers)
        self.dims = dims
        self.conv_in = _conv(dims, 3, filters, 3)
        widths = [filters] + [filters * m for m in channel_multipliers]
        self.blocks = nn.Sequential(*(_DownBlock(widths[i], widths[i + 1], dims) for i in range(n)))
        c = widths[-1]
        self.conv_out = _conv(dims, c, c, 3)
        self.final_frames = 1 if dims == 2 or num_frames is None else _final_size(num_frames, n)
        features = c * self.final_frames * _final_size(h, n) * _final_size(w, n)
        self.dense = nn.Linear(features, c)
        self.logit = nn.Linear(c, 1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv_in(video * 2 - 1), 0.2)  # [0, 1] -> [-1, 1]
        x = F.leaky_relu(self.conv_out(self.blocks(x)), 0.2)
        if self.dims == 3 and x.shape[2] != self.final_frames:
            if self.final_frames != 1:
                raise ValueError("this discriminator reads clips of a fixed length")
            x = x.mean(2, keepdim=True)
        x = F.leaky_relu(self.dense(x.flatten(1)), 0.2)
        return self.logit(x).squeeze(1)


def inflate_discriminator_2d(
    state_2d: dict[str, torch.Tensor], disc_3d: Discriminator
) -> dict[str, torch.Tensor]:
    """A 3D discriminator state dict from a 2D one (`Discriminator(..., dims=2)`) by central
    inflation: each 3x3 kernel goes to the centre of a 3x3x3 one (zeros elsewhere), 1x1 kernels
    gain a unit time axis, and the first dense layer is spread evenly over the final map's T
    cells. A static clip then gets the 2D discriminator's logit for its frame."""
    out: dict[str, torch.Tensor] = {}
    target = disc_3d.state_dict()
    t = disc_3d.final_frames
    for name, want in target.items():
        w = state_2d[name]
        if w.dim() == 4:  # conv kernel [O, I, kh, kw] -> [O, I, kt, kh, kw]
            kt = want.shape[2]
            inflated = torch.zeros_like(want)
            inflated[:, :, kt // 2] = w
            out[name] = inflated
        elif name == "dense.weight" and t > 1:  # [O, C*H*W] -> [O, C*T*H*W], divided over T
            o, c = w.shape[0], disc_3d.conv_out.out_channels
            w = w.view(o, c, 1, -1).expand(o, c, t, w.shape[1] // c) / t
            out[name] = w.reshape(want.shape).clone()
        else:
            if w.shape != want.shape:
                raise ValueError(
                    f"{name}: 2D shape {tuple(w.shape)} does not inflate to {tuple(want.shape)}"
                )
            out[name] = w.clone()
    return out


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating: -log sigmoid(D(fake))."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 on real data (`real` must require grad)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def lecam_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, ema_real: float, ema_fake: float
) -> torch.Tensor:
    """LeCam regularisation as the official trainer computes it: on the batch means of the
    discriminator's outputs, relu(mean D(real) - ema_fake)^2 + relu(ema_real - mean D(fake))^2.
    (The per-sample form penalises every outlier logit; the official one only the batch's drift
    away from the other side's anchor.)"""
    real_pred, fake_pred = real_logits.mean(), fake_logits.mean()
    return F.relu(real_pred - ema_fake).pow(2) + F.relu(ema_real - fake_pred).pow(2)


class LeCamEMA:
    """EMAs of the discriminator's mean outputs on real and fake data (the LeCam anchors). The
    official trainer starts them at 0 and decays them with the generator EMA's decay (0.999),
    updating after the step's loss is computed."""

    def __init__(self, decay: float = 0.999) -> None:
        self.decay = decay
        self.real = 0.0
        self.fake = 0.0

    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        self.real = self.decay * self.real + (1 - self.decay) * real_logits.mean().item()
        self.fake = self.decay * self.fake + (1 - self.decay) * fake_logits.mean().item()
