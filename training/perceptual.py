"""Per-frame perceptual losses on a pretrained image network, weights given by path.

Two kinds, chosen by `make_perceptual_loss(kind, weights_path)`:
- "resnet50": the official MAGVIT loss, the squared L2 distance between the ImageNet logits of a
  ResNet-50 for each frame of the reconstruction and of the real video, frames resized to 224.
- "vgg16": LPIPS-style, the mean squared difference of channel-normalised VGG16 activations
  before each pool (this project's loss before the official one was known).

Both networks follow torchvision's layout, so torchvision's ImageNet weights load by name from a
safetensors file (no download: the file is given). Without weights the loss is off.

Shapes: videos [B, 3, T, H, W] in [0, 1]; frames go through the network as [B*T, 3, H, W].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

PERCEPTUAL_KINDS = ("resnet50", "vgg16")

# VGG16 conv widths; "M" = max-pool. Features are taken before each pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# ImageNet normalisation, which torchvision's weights expect.
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _frames(video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] in [0, 1] -> ImageNet-normalised frames [B*T, C, H, W]."""
    x = video.movedim(2, 1).flatten(0, 1)
    return (x - _MEAN.to(x)) / _STD.to(x)


def load_weights(module: nn.Module, path: str | Path, what: str) -> None:
    """Load `module`'s tensors by name from a safetensors file, refusing a file that lacks one
    of them or holds it in another shape (extra tensors, e.g. VGG's classifier, are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    try:
        state = load_file(str(path))
    except SafetensorError as err:
        raise ValueError(f"{path} is not a safetensors file ({err})") from None
    expected = module.state_dict()
    # BatchNorm's step counter plays no part in eval mode; some conversions leave it out.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [
        f"{k} is {tuple(state[k].shape)}, not {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or wrong:
        found = ", ".join(list(state)[:3]) or "nothing"
        problems = wrong[:3]
        if missing:
            problems.insert(0, f"{len(missing)} tensors missing ({', '.join(missing[:3])}, ...)")
        raise ValueError(
            f"{path} does not hold {what} weights in torchvision's names: "
            f"{'; '.join(problems)}; the file has {found}, ..."
        )
    module.load_state_dict({k: state[k] for k in expected if k in state}, strict=False)


# ------------------------------------------------------------------------------ ResNet-50
class Bottleneck(nn.Module):
    """1x1 -> 3x3 (with the stride, as torchvision's "v1.5") -> 1x1 at 4x width, plus a
    projected shortcut where the shape changes."""

    def __init__(self, in_dim: int, width: int, stride: int) -> None:
        super().__init__()
        out_dim = 4 * width
        self.conv1 = nn.Conv2d(in_dim, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_dim, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_dim)
        self.downsample = None
        if stride != 1 or in_dim != out_dim:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 1, stride, bias=False), nn.BatchNorm2d(out_dim)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """ResNet-50 with torchvision's parameter names: [N, 3, 224, 224] -> logits [N, 1000]."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_dim = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
            stride = 1 if i == 0 else 2  # layer1 follows the max-pool at stride 4 already
            layer = []
            for j in range(blocks):
                layer.append(Bottleneck(in_dim, width, stride if j == 0 else 1))
                in_dim = 4 * width
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)  # [N, 64, H/4, W/4]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)  # -> [N, 2048, H/32, W/32]
        return self.fc(x.mean((2, 3)))


class ResNet50PerceptualLoss(nn.Module):
    """The official perceptual loss: mean squared difference of ImageNet logits per frame."""

    def __init__(self, weights: str | Path, image_size: int = 224) -> None:
        super().__init__()
        self.image_size = image_size  # the resolution the ImageNet weights were trained at
        self.net = ResNet50()
        load_weights(self.net, weights, "ResNet-50")
        self.net.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> ResNet50PerceptualLoss:
        super().train(mode)
        self.net.eval()  # frozen BatchNorm statistics, whatever the trainer's mode
        return self

    def logits(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> [B*T, 1000]."""
        x = video.movedim(2, 1).flatten(0, 1)  # [B*T, 3, H, W]
        size = (self.image_size, self.image_size)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - _MEAN.to(x)) / _STD.to(x)).float()

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.logits(fake), self.logits(real))


# ---------------------------------------------------------------------------------- VGG16
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
    """LPIPS-style loss on VGG16 features (torchvision's `features.*` names)."""

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        self.net = VGGFeatures()
        load_weights(self.net, weights, "VGG16")
        self.net.requires_grad_(False).eval()

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        loss = fake.new_zeros(())
        for a, b in zip(self.net(_frames(fake)), self.net(_frames(real)), strict=True):
            loss = loss + F.mse_loss(F.normalize(a, dim=1), F.normalize(b, dim=1)) * a.shape[1]
        return loss


def make_perceptual_loss(kind: str, weights_path: str | Path | None) -> nn.Module | None:
    """The tokenizer's perceptual loss `loss(fake, real) -> scalar` of `kind` ("resnet50", the
    official one, or "vgg16"), with the weights in `weights_path` (safetensors, torchvision
    names); None (the loss is off) when no path is given. A path that does not exist or a file
    of other weights is an error, never a silently disabled loss."""
    if kind not in PERCEPTUAL_KINDS:
        raise ValueError(
            f"perceptual kind must be one of {', '.join(PERCEPTUAL_KINDS)}, not {kind!r}"
        )
    if not weights_path:
        return None
    if kind == "resnet50":
        return ResNet50PerceptualLoss(weights_path)
    return PerceptualLoss(weights_path)
