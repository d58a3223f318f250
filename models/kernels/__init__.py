"""Fused kernels (Triton on CUDA) beside their PyTorch references."""

from models.kernels.attention import masked_attention

__all__ = ["masked_attention"]
