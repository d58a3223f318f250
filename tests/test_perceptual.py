"""Perceptual losses: the official ResNet-50 logits loss and the VGG16 one, weights by path."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from training.perceptual import (
    PerceptualLoss,
    ResNet50,
    ResNet50PerceptualLoss,
    VGGFeatures,
    make_perceptual_loss,
)


def _save(module: torch.nn.Module, path, drop: str = "") -> str:
    state = {k: v.contiguous() for k, v in module.state_dict().items() if not drop or drop not in k}
    save_file(state, str(path))
    return str(path)


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    torch.manual_seed(0)
    net = ResNet50()
    for m in net.modules():  # BatchNorm statistics as trained weights would have them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    # Some conversions of torchvision's weights leave out BatchNorm's step counter.
    return _save(net, tmp_path_factory.mktemp("w") / "resnet50.safetensors", "num_batches")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(0)
    return _save(VGGFeatures(), tmp_path_factory.mktemp("w") / "vgg16.safetensors")


def test_resnet50_has_torchvisions_layout():
    net = ResNet50()
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 25_557_032  # torchvision's resnet50
    assert len(state) == 320  # 53 convs, 53 BatchNorms x 5 tensors, fc weight and bias
    shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_var": (64,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn3.weight": (1024,),
        "layer3.0.downsample.1.running_mean": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048),
        "fc.bias": (1000,),
    }
    for name, shape in shapes.items():
        assert tuple(state[name].shape) == shape, name
    assert "layer1.1.downsample.0.weight" not in state  # only the first block of a layer


def test_resnet50_loss(resnet_file):
    loss = make_perceptual_loss("resnet50", resnet_file)
    assert isinstance(loss, ResNet50PerceptualLoss)
    torch.manual_seed(1)
    real = torch.rand(1, 3, 2, 16, 16)  # [B, C, T, H, W]
    assert loss.logits(real).shape == (2, 1000)  # one row of logits per frame
    assert loss(real, real.clone()) == 0
    fake = (real + 0.1 * torch.randn_like(real)).clamp(0, 1).requires_grad_()
    value = loss(fake, real)
    assert value > 0
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())  # the network stays frozen
    # A trainer's .train() does not put BatchNorm back into batch statistics.
    before = loss.net.bn1.running_mean.clone()
    loss.train()
    assert loss(real, real.clone()) == 0 and torch.equal(loss.net.bn1.running_mean, before)


def test_vgg16_loss(vgg_file):
    loss = make_perceptual_loss("vgg16", vgg_file)
    assert isinstance(loss, PerceptualLoss)
    torch.manual_seed(1)
    real = torch.rand(1, 3, 2, 16, 16)
    assert loss(real, real.clone()) == 0
    fake = (real + 0.1 * torch.randn_like(real)).clamp(0, 1).requires_grad_()
    value = loss(fake, real)
    value.backward()
    assert value > 0 and fake.grad.abs().sum() > 0


def test_wrong_weights_are_refused_clearly(tmp_path, resnet_file, vgg_file):
    with pytest.raises(ValueError, match=r"ResNet-50 weights.*missing.*conv1\.weight"):
        make_perceptual_loss("resnet50", vgg_file)
    with pytest.raises(ValueError, match=r"VGG16 weights.*missing.*features\.0\.weight"):
        make_perceptual_loss("vgg16", resnet_file)
    other = ResNet50(num_classes=10)  # the right names, the wrong head
    with pytest.raises(ValueError, match=r"fc\.weight is \(10, 2048\), not \(1000, 2048\)"):
        make_perceptual_loss("resnet50", _save(other, tmp_path / "ten.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file at all")
    with pytest.raises(ValueError, match="not a safetensors file"):
        make_perceptual_loss("resnet50", tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="ResNet-50 weights not found"):
        make_perceptual_loss("resnet50", tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="resnet50, vgg16"):
        make_perceptual_loss("alexnet", resnet_file)
    assert make_perceptual_loss("resnet50", None) is None  # no weights: the loss is off
