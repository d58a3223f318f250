"""Attention dropout: on the attention probabilities in training (as the official BERT), none in
eval."""

from __future__ import annotations

import pytest
import torch

from models.config import TransformerConfig
from models.transformer import SelfAttention


def _attention() -> SelfAttention:
    torch.manual_seed(0)
    cfg = TransformerConfig(hidden_dim=8, num_heads=2, num_layers=1, mlp_dim=16, dropout=0.5)
    return SelfAttention(cfg)


def test_attention_probabilities_are_dropped_in_training_only():
    att = _attention()
    x = torch.randn(2, 5, 8)
    att.eval()
    ref = att(x, None)
    assert torch.equal(att(x, None), ref)  # eval: deterministic, no dropout
    att.train()
    torch.manual_seed(1)
    a = att(x, None)
    torch.manual_seed(2)
    b = att(x, None)
    # The module holds no dropout layer of its own: any difference comes from the
    # probabilities being dropped.
    assert not torch.allclose(a, ref) and not torch.allclose(a, b)
    # Dropout keeps the expectation: the mean over many draws approaches the eval output.
    torch.manual_seed(3)
    mean = torch.stack([att(x, None) for _ in range(400)]).mean(0)
    assert torch.allclose(mean, ref, atol=0.1)


def test_gelu_is_the_tanh_form_but_in_bf16_on_the_cpu():
    import torch.nn.functional as F

    from models.transformer import _gelu

    x = torch.linspace(-6, 6, 1001)
    assert torch.equal(_gelu(x), F.gelu(x, approximate="tanh"))  # the official form
    xb = x.bfloat16()
    assert torch.equal(_gelu(xb), F.gelu(xb))  # the erf form: PyTorch's bf16 tanh is slow
    assert (_gelu(xb).float() - F.gelu(x, approximate="tanh")).abs().max() < 0.04


def test_attention_dropout_can_be_set_apart_from_the_hidden_dropout():
    from models.config import CONFIGS
    from models.pipeline import build_transformer

    model = build_transformer(CONFIGS["tiny"]).train()
    assert {layer.attention.attention_dropout for layer in model.layers} == {
        CONFIGS["tiny"].transformer.dropout
    }
    model.set_attention_dropout(0.0)
    assert {layer.attention.attention_dropout for layer in model.layers} == {0.0}
    att = model.layers[0].attention
    x = torch.randn(2, 5, att.query.in_features)
    torch.manual_seed(1)
    a = att(x, None)
    torch.manual_seed(2)
    assert torch.equal(a, att(x, None))  # in training, and nothing is dropped
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            model.set_attention_dropout(bad)
