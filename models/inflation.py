"""2D -> 3D inflation of tokenizer weights (spec section 2; the paper's ablation prefers central).

A 2D tokenizer (`TokenizerConfig.conv_dim == 2`) has the same modules as the 3D one, so state dict
names match; only conv kernels differ: [out, in, kh, kw] becomes [out, in, kt, kh, kw].
- central: the 2D kernel in the middle temporal slice, zeros elsewhere. A static video through
  the inflated conv equals the 2D conv on each frame (away from temporal borders with zero
  padding, everywhere with reflect padding).
- average: the 2D kernel repeated over kt slices and divided by kt.
"""

from __future__ import annotations

import torch

from models.config import TokenizerConfig


def inflate_kernel(kernel_2d: torch.Tensor, temporal_size: int, mode: str) -> torch.Tensor:
    """[out, in, kh, kw] -> [out, in, kt, kh, kw]."""
    if mode == "central":
        out = kernel_2d.new_zeros(*kernel_2d.shape[:2], temporal_size, *kernel_2d.shape[2:])
        out[:, :, temporal_size // 2] = kernel_2d
        return out
    if mode == "average":
        return kernel_2d.unsqueeze(2).repeat(1, 1, temporal_size, 1, 1) / temporal_size
    raise ValueError(f"inflation mode must be 'central' or 'average', not {mode!r}")


def inflate_2d_to_3d(
    state_2d: dict[str, torch.Tensor], cfg3d: TokenizerConfig, mode: str = "central"
) -> dict[str, torch.Tensor]:
    """A 2D tokenizer's state dict -> a state dict for `VQTokenizer(cfg3d)`."""
    if cfg3d.conv_dim != 3:
        raise ValueError("the target config must be 3D")
    out = {}
    for name, tensor in state_2d.items():
        if tensor.ndim == 4:  # conv kernels; temporal size = spatial size (3 or 1)
            tensor = inflate_kernel(tensor, tensor.shape[-1], mode)
        out[name] = tensor.clone()
    return out
