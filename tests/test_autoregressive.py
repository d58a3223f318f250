"""The autoregressive baseline: its KV cache computes what a full causal forward computes."""

from __future__ import annotations

import torch

from models.autoregressive import AutoregressiveTransformer
from models.config import TransformerConfig


def test_kv_cache_matches_full_forward():
    cfg = TransformerConfig(hidden_dim=32, num_layers=2, num_heads=4, mlp_dim=64)
    model = AutoregressiveTransformer(cfg, vocab_size=40, max_positions=20).eval()
    ids = torch.randint(0, 40, (2, 12))
    full = model(ids)
    caches = [{} for _ in model.blocks]
    steps = [model(ids[:, :4], 0, caches)]
    steps += [model(ids[:, i : i + 1], i, caches) for i in range(4, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_generate_samples_codebook_tokens_only():
    cfg = TransformerConfig(hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    model = AutoregressiveTransformer(cfg, vocab_size=30, max_positions=16).eval()
    out = model.generate(
        torch.tensor([[20, 25]]), 10, codebook_size=8, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (1, 10) and (out < 8).all()
