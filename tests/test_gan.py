"""The tokenizer's GAN pieces against the official definitions."""

from __future__ import annotations

import pytest
import torch

from training import gan


def test_lecam_is_on_batch_means():
    real = torch.tensor([1.0, -1.0, 3.0])  # mean 1
    fake = torch.tensor([0.0, 2.0])  # mean 1
    # relu(1 - 0.5)^2 + relu(1.5 - 1)^2 = 0.25 + 0.25; the per-sample form would give
    # mean([0.25, 0, 6.25]) + mean([2.25, 0]) = 3.29.
    assert gan.lecam_loss(real, fake, ema_real=1.5, ema_fake=0.5).item() == pytest.approx(0.5)
    # Batch means inside the anchors: no penalty, although single logits lie outside.
    assert gan.lecam_loss(real, fake, ema_real=0.0, ema_fake=2.0).item() == 0.0
