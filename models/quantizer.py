"""Vector quantizer with a straight-through estimator (spec section 2).

Shapes: B batch, D embedding dim, K codebook size; features are channels-first [B, D, *grid]
(grid = t, h, w for video, h, w for images); ids are [B, *grid].

Losses (official definitions): commitment = cost * |sg(q) - z|^2, codebook = |q - sg(z)|^2, and an
entropy regulariser on the softmax of -distances / temperature: per-sample entropy minus the
entropy of the batch-average distribution (confident codes, all codes used).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import TokenizerConfig


def entropy_loss(affinity: torch.Tensor, temperature: float) -> torch.Tensor:
    """affinity [N, K] (higher = closer). Returns sample entropy - average entropy."""
    logits = affinity / temperature
    probs = F.softmax(logits, dim=-1)
    log_probs = F.log_softmax(logits + 1e-5, dim=-1)
    avg_probs = probs.mean(0)
    avg_entropy = -(avg_probs * torch.log(avg_probs + 1e-5)).sum()
    sample_entropy = -(probs * log_probs).sum(-1).mean()
    return sample_entropy - avg_entropy


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Official init: Flax variance_scaling(1, "fan_in", "uniform") on the [K, D] codebook,
        # whose fan-in is K (the second-to-last axis): U(-sqrt(3/K), sqrt(3/K)).
        bound = (3.0 / cfg.codebook_size) ** 0.5
        self.codebook = nn.Parameter(torch.empty(cfg.codebook_size, cfg.embedding_dim))
        nn.init.uniform_(self.codebook, -bound, bound)

    def _distances(self, flat: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances [N, K] from flat features [N, D] to every code, in fp32
        whatever the weights' precision and outside any autocast, so that the nearest code does
        not depend on them."""
        with torch.autocast(flat.device.type, enabled=False):
            flat, e = flat.float(), self.codebook.float()
            return flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None, :]

    @staticmethod
    def _flatten(z: torch.Tensor) -> torch.Tensor:
        return z.movedim(1, -1).reshape(-1, z.shape[1])  # [B, D, *grid] -> [N, D]

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Features [B, D, *grid] -> ids [B, *grid]."""
        flat = self._flatten(z).float()
        ids = self._distances(flat).argmin(1)
        return ids.view(z.shape[0], *z.shape[2:])

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids [B, *grid] -> code vectors [B, D, *grid]."""
        return F.embedding(ids, self.codebook).movedim(-1, 1)

    def forward(self, z: torch.Tensor):
        """Returns (straight-through quantized [B, D, *grid], ids [B, *grid], losses)."""
        flat = self._flatten(z)
        distances = self._distances(flat.float())
        ids_flat = distances.argmin(1)
        q = self.lookup(ids_flat.view(z.shape[0], *z.shape[2:])).to(z.dtype)
        commitment = self.cfg.commitment_cost * F.mse_loss(z, q.detach())
        codebook = F.mse_loss(q, z.detach())
        entropy = entropy_loss(-distances, self.cfg.entropy_temperature)
        losses = {
            "commitment": commitment,
            "codebook": codebook,
            "entropy": entropy,
            "quantizer": commitment + codebook + self.cfg.entropy_loss_ratio * entropy,
        }
        quantized = z + (q - z).detach()  # straight-through: the decoder's gradient reaches z
        return quantized, ids_flat.view(z.shape[0], *z.shape[2:]), losses
