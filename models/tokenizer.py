"""The 3D-VQ video tokenizer (spec section 2), and its 2D variant for images.

Shapes: B batch, C channels, T frames, H, W pixels; t, h, w tokens; D embedding dim, K codebook.
Videos are [B, 3, T, H, W] in [0, 1] (the encoder sees them as they are, like the official
model); the 2D variant takes [B, 3, H, W].

Layout (official definitions, pinned by tests/test_parity.py):
  encoder: conv3 (no bias) -> per level: res blocks, then average-pool downsampling (3D for the
           shallow levels, 2D for the deep one) -> res blocks -> GroupNorm -> swish -> conv1 (bias)
  decoder: conv3 (bias) -> res blocks -> per level from the deepest: res blocks, then nearest
           upsampling (2D first, then 3D) + conv3 (bias) -> GroupNorm -> swish -> conv3 (bias)
  res block: GN -> swish -> conv3 -> GN -> swish -> conv3 (no biases), 1x1 shortcut if widths
           differ. GroupNorm eps 1e-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.config import TokenizerConfig
from models.quantizer import VectorQuantizer


class Conv(nn.Module):
    """A 3D (or 2D) convolution with 'same' output size and reflect or zero padding.

    Reflect padding replaces zero padding in MAGVIT "to improve token consistency of the same
    content at different locations"; it pads explicitly and then convolves without padding."""

    def __init__(self, cfg: TokenizerConfig, c_in: int, c_out: int, kernel: int, bias: bool):
        super().__init__()
        conv = nn.Conv3d if cfg.conv_dim == 3 else nn.Conv2d
        self.reflect = cfg.padding == "reflect" and kernel > 1
        pad = kernel // 2
        self.pad = (pad,) * (2 * cfg.conv_dim)
        self.conv = conv(c_in, c_out, kernel, padding=0 if self.reflect else pad, bias=bias)
        if cfg.padding not in ("reflect", "zeros"):
            raise ValueError(f"padding must be 'reflect' or 'zeros', not {cfg.padding!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reflect:
            x = F.pad(x, self.pad, mode="reflect")
        return self.conv(x)


def _norm(cfg: TokenizerConfig, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(cfg.num_groups, channels), channels, eps=cfg.norm_eps)


class ResBlock(nn.Module):
    def __init__(self, cfg: TokenizerConfig, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = _norm(cfg, c_in)
        self.conv1 = Conv(cfg, c_in, c_out, 3, bias=False)
        self.norm2 = _norm(cfg, c_out)
        self.conv2 = Conv(cfg, c_out, c_out, 3, bias=False)
        self.shortcut = Conv(cfg, c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.shortcut is None else self.shortcut(x))


def _resample_factor(cfg: TokenizerConfig, temporal: bool) -> tuple[int, ...]:
    if cfg.conv_dim == 2:
        return (2, 2)
    return (2 if temporal else 1, 2, 2)


class Downsample(nn.Module):
    """Average pooling: T, H and W halve (3D) or only H and W (2D)."""

    def __init__(self, cfg: TokenizerConfig, temporal: bool) -> None:
        super().__init__()
        self.factor = _resample_factor(cfg, temporal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Average pooling (kernel = stride = factor, remainders dropped) as a depthwise
        # convolution with weights 1 / (its volume): the same numbers as avg_pool, defined for
        # bf16 on the CPU (avg_pool3d is not) and fast in any memory layout (oneDNN: 60x a
        # reshape and mean on channels-last-3d bf16 activations).
        channels = x.shape[1]
        weight = torch.full(
            (channels, 1, *self.factor),
            1.0 / math.prod(self.factor),
            dtype=x.dtype,
            device=x.device,
        )
        conv = F.conv3d if len(self.factor) == 3 else F.conv2d
        return conv(x, weight, stride=self.factor, groups=channels)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling followed by a conv3 (with bias)."""

    def __init__(self, cfg: TokenizerConfig, channels: int, temporal: bool) -> None:
        super().__init__()
        self.factor = _resample_factor(cfg, temporal)
        self.conv = Conv(cfg, channels, channels, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Nearest at whole factors repeats every element: the numbers of repeat_interleave
        # along each axis, in one pass that keeps a channels-last-3d layout (10x faster there,
        # and the padding and convolution after it need no layout copy).
        return self.conv(F.interpolate(x, scale_factor=self.factor, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        widths = [cfg.filters * m for m in cfg.channel_multipliers]
        self.conv_in = Conv(cfg, 3, cfg.filters, 3, bias=False)
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        c = cfg.filters
        for i, width in enumerate(widths):
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cfg, c, width))
                c = width
            self.levels.append(nn.Sequential(*blocks))
            if i < len(widths) - 1:
                self.downsamples.append(Downsample(cfg, cfg.temporal_downsample[i]))
        self.mid = nn.Sequential(*(ResBlock(cfg, c, c) for _ in range(cfg.num_res_blocks)))
        self.norm_out = _norm(cfg, c)
        self.conv_out = Conv(cfg, c, cfg.embedding_dim, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for i, level in enumerate(self.levels):
            x = level(x)
            if i < len(self.downsamples):
                x = self.downsamples[i](x)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        widths = [cfg.filters * m for m in cfg.channel_multipliers]
        c = widths[-1]
        self.conv_in = Conv(cfg, cfg.embedding_dim, c, 3, bias=True)
        self.mid = nn.Sequential(*(ResBlock(cfg, c, c) for _ in range(cfg.num_res_blocks)))
        self.levels = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        # From the deepest level up; level i > 0 ends by undoing the encoder's i-th downsampling,
        # so the deep (2D) upsamplings come first and the shallow (3D) ones last.
        for i in reversed(range(len(widths))):
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cfg, c, widths[i]))
                c = widths[i]
            self.levels.append(nn.Sequential(*blocks))
            if i > 0:
                self.upsamples.append(Upsample(cfg, c, cfg.temporal_downsample[i - 1]))
        self.norm_out = _norm(cfg, c)
        self.conv_out = Conv(cfg, c, 3, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(x))
        for i, level in enumerate(self.levels):
            x = level(x)
            if i < len(self.upsamples):
                x = self.upsamples[i](x)
        return self.conv_out(F.silu(self.norm_out(x)))


@dataclass
class TokenizerOutput:
    reconstruction: torch.Tensor  # [B, 3, T, H, W]
    ids: torch.Tensor  # [B, t, h, w]
    quantized: torch.Tensor  # [B, D, t, h, w], straight-through
    features: torch.Tensor  # [B, D, t, h, w], the encoder's output before quantization
    losses: dict[str, torch.Tensor]  # "commitment", "codebook", "entropy", "quantizer"


class VQTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizer(cfg)
        self.decoder = Decoder(cfg)

    def encode_features(self, video: torch.Tensor) -> torch.Tensor:
        return self.encoder(video)

    def decode_features(self, quantized: torch.Tensor) -> torch.Tensor:
        return self.decoder(quantized)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video -> token ids [B, t, h, w]."""
        return self.quantizer.nearest(self.encoder(video))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, t, h, w] -> video (not clamped)."""
        return self.decoder(self.quantizer.lookup(ids))

    def forward(self, video: torch.Tensor) -> TokenizerOutput:
        features = self.encoder(video)
        quantized, ids, losses = self.quantizer(features)
        return TokenizerOutput(self.decoder(quantized), ids, quantized, features, losses)
