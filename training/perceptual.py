"""A per-frame perceptual loss (LPIPS-style) on VGG16 features, weights given by path.

The network is VGG16's convolutional part (torchvision's layout, so its `features.*` weights
load as they are, from a safetensors file); the distance is the mean squared difference of
channel-normalised activations after each block. Without weights the loss is off.

Shapes: videos [B, 3, T, H, W] in [0, 1]; frames go through the network as [B*T, 3, H, W].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

# VGG16 conv widths; "M" = max-pool. Features are taken before each pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class VGGFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                outs.append(x)
            x = layer(x)
        return [*outs, x]


class PerceptualLoss(nn.Module):
    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        self.net = VGGFeatures()
        state = load_file(str(weights))
        self.net.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
        self.net.requires_grad_(False).eval()

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        def frames(v: torch.Tensor) -> torch.Tensor:
            v = v.movedim(2, 1).flatten(0, 1)  # [B, C, T, H, W] -> [B*T, C, H, W]
            return (v - _MEAN.to(v)) / _STD.to(v)

        loss = fake.new_zeros(())
        for a, b in zip(self.net(frames(fake)), self.net(frames(real)), strict=True):
            loss = loss + F.mse_loss(F.normalize(a, dim=1), F.normalize(b, dim=1)) * a.shape[1]
        return loss
