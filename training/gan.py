"""Adversarial training of the tokenizer (spec section 3): a StyleGAN-style discriminator
inflated to 3D, the non-saturating loss, the R1 penalty and LeCam regularisation.

Shapes: videos [B, 3, T, H, W]; discriminator logits [B].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _DownBlock(nn.Module):
    """StyleGAN2 residual block: conv3 -> lrelu -> conv3 -> lrelu -> downsample, with a 1x1
    skip; the sum is scaled by 1/sqrt(2). T halves too while it is at least 2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_in, 3, padding=1)
        self.conv2 = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.skip = nn.Conv3d(c_in, c_out, 1, bias=False)

    @staticmethod
    def _down(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(x, (2 if x.shape[2] >= 2 else 1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = self._down(F.leaky_relu(self.conv2(h), 0.2))
        return (h + self._down(self.skip(x))) / math.sqrt(2)


class Discriminator(nn.Module):
    """Channel multipliers (2, 4, 4, 4, 4) of the tokenizer's filters, as in MAGVIT; one block
    per multiplier while the frame is at least 8 pixels wide; features pooled before the head
    so any clip length works."""

    def __init__(self, filters: int, frame_size: int, channel_multipliers=(2, 4, 4, 4, 4)):
        super().__init__()
        widths = [filters * m for m in channel_multipliers]
        num_blocks = min(len(widths) - 1, max(1, int(math.log2(frame_size)) - 2))
        self.conv_in = nn.Conv3d(3, widths[0], 3, padding=1)
        self.blocks = nn.Sequential(
            *(_DownBlock(widths[i], widths[i + 1]) for i in range(num_blocks))
        )
        c = widths[num_blocks]
        self.conv_out = nn.Conv3d(c, c, 3, padding=1)
        self.head = nn.Sequential(nn.Linear(c, c), nn.LeakyReLU(0.2), nn.Linear(c, 1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv_in(video * 2 - 1), 0.2)  # [0, 1] -> [-1, 1]
        x = F.leaky_relu(self.conv_out(self.blocks(x)), 0.2)
        return self.head(x.mean((2, 3, 4))).squeeze(1)  # pooled over T, H, W


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
