"""Bidirectional attention with a key-padding mask, and the choice of backend.

Shapes: B batch, H heads, L sequence length, D head dim.
`MAGVIT_ATTENTION=auto|triton|sdpa` picks the backend: auto = the fused Triton kernel
(`attention_triton.py`) on CUDA tensors when Triton is installed, PyTorch SDPA elsewhere; `triton`
with TRITON_INTERPRET=1 runs the Triton kernel on CPU tensors. Both backends return zeros for a
query whose mask keeps no key.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "triton", "sdpa")


def attention_backend() -> str:
    backend = os.environ.get("MAGVIT_ATTENTION", "auto").lower()
    if backend not in BACKENDS:
        raise ValueError(f"MAGVIT_ATTENTION must be one of {BACKENDS}, not {backend!r}")
    return backend


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Reference: PyTorch SDPA. q, k, v [B, H, L, D]; key_padding_mask [B, L], True = attend.
    `dropout_p` drops attention probabilities (training only; the caller passes 0 in eval)."""
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    mask = key_padding_mask[:, None, None, :]  # [B, 1, 1, L]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    # PyTorch >= 2.5 already gives zeros for a row with no key; older versions give NaN.
    empty = ~key_padding_mask.any(1)  # [B]
    return out.masked_fill(empty[:, None, None, None], 0.0)


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over the keys that the mask keeps; returns [B, H, L, D].
    With `dropout_p` > 0 (training) the probabilities are dropped as in the official BERT; the
    Triton kernel is inference-only, so that always runs on SDPA."""
    if dropout_p > 0:
        return sdpa_attention(q, k, v, key_padding_mask, dropout_p)
    backend = attention_backend()
    if backend == "sdpa" or (backend == "auto" and not (q.is_cuda and triton_available())):
        return sdpa_attention(q, k, v, key_padding_mask)
    from models.kernels.attention_triton import interpreting, triton_masked_attention

    if not q.is_cuda and not interpreting():
        raise RuntimeError("MAGVIT_ATTENTION=triton on CPU tensors needs TRITON_INTERPRET=1")
    return triton_masked_attention(q, k, v, key_padding_mask)
