"""The transformer's logits limited to the video positions and the codebook (`first`, `vocab`),
as training asks for them: the same numbers and gradients as slicing the full logits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.config import TransformerConfig
from models.transformer import BidirectionalTransformer


@pytest.mark.parametrize("task_token", [True, False])
def test_limited_logits_are_the_full_logits_sliced_with_the_same_gradients(task_token):
    cfg = TransformerConfig(hidden_dim=16, num_heads=2, num_layers=2, mlp_dim=32, dropout=0.0)
    cfg = dataclasses.replace(cfg, task_token=task_token)
    torch.manual_seed(0)
    model = BidirectionalTransformer(cfg, vocab_size=30, max_positions=12)
    with torch.no_grad():
        model.mlm_bias.normal_()  # a bias that is not zero, to be sliced too
    ids = torch.randint(0, 30, (3, 12))
    segments = torch.randint(0, 2, (3, 12))
    target = torch.randn(3, 10, 24)

    full = model(ids, segments)
    assert full.shape == (3, 12, 30)
    limited = model(ids, segments, first=2, vocab=24)
    assert limited.shape == (3, 10, 24)
    torch.testing.assert_close(limited, full[:, 2:, :24], rtol=1e-5, atol=1e-6)

    def grads(logits: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        (logits * target).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(
        grads(model(ids, segments)[:, 2:, :24]),
        grads(model(ids, segments, first=2, vocab=24)),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
