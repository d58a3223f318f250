"""The mask schedule, shared by COMMIT training (to mask) and decoding (to unmask).

Shapes: B batch, N video tokens (t * h * w, flattened in t, h, w order).

Training (spec section 6): r = cos(pi/2 * u), u ~ U[0, 1); floor(r * N) random tokens are masked.
Masked positions inside the task's condition region receive the condition tokens (segment 1);
masked positions outside it receive [MASK]; the others keep the real tokens. Targets are always
the real tokens.

Decoding (spec section 7): after step s of S the fraction cos(pi/2 * (s+1)/S) of the tokens stays
masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# The official schedule never returns exactly 0: it clips the ratio at this floor.
_MIN_RATIO = 1e-6


@dataclass(frozen=True)
class MaskSchedule:
    """Cosine mask schedule: ratio(x) = cos(pi/2 * x) for x in [0, 1]."""

    def ratio(self, x: float) -> float:
        return max(math.cos(math.pi / 2 * x), _MIN_RATIO)

    def decoding_ratios(self, steps: int) -> list[float]:
        """Masked fraction after each of `steps` decoding steps."""
        return [self.ratio((s + 1) / steps) for s in range(steps)]

    def num_to_remask(self, step: int, steps: int, num_tokens: int, num_unknown: torch.Tensor):
        """How many tokens to re-mask after `step` (0-based): floor(ratio * N), at least 1 and at
        most unknown - 1, so every step fixes at least one token; the last step fixes all."""
        if step == steps - 1:
            return torch.zeros_like(num_unknown)
        n = math.floor(self.ratio((step + 1) / steps) * num_tokens)
        return torch.clamp(torch.full_like(num_unknown, n), min=1).minimum(num_unknown - 1).clamp(0)

    def training_ratio(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """One mask ratio per sample: cos(pi/2 * u), u ~ U[0, 1). Returns [B]."""
        u = torch.rand(batch, generator=generator)
        return torch.cos(math.pi / 2 * u)


@dataclass
class MaskedBatch:
    """A COMMIT training input: video-token ids, segments and what was masked."""

    input_ids: torch.Tensor  # [B, N] long
    segment_ids: torch.Tensor  # [B, N] long, 1 = condition token placed in a masked position
    masked: torch.Tensor  # [B, N] bool


def commit_mask(
    tokens: torch.Tensor,
    cond_tokens: torch.Tensor,
    cond_mask: torch.Tensor,
    mask_id: int,
    schedule: MaskSchedule = MaskSchedule(),
    generator: torch.Generator | None = None,
) -> MaskedBatch:
    """COMMIT masking of real `tokens` [B, N] given `cond_tokens` [B, N] and the task's token
    region `cond_mask` [B, N] (True = condition). The random draws come from `generator` (CPU)."""
    b, n = tokens.shape
    ratio = schedule.training_ratio(b, generator)  # [B]
    num_masked = torch.floor(ratio * n).long()  # [B]
    # A random permutation per row; the first num_masked positions of it are masked.
    scores = torch.rand(b, n, generator=generator)
    ranks = scores.argsort(1).argsort(1)
    masked = (ranks < num_masked[:, None]).to(tokens.device)
    cond_mask = cond_mask.to(tokens.device)
    fill = torch.where(cond_mask, cond_tokens, torch.full_like(tokens, mask_id))
    input_ids = torch.where(masked, fill, tokens)
    segment_ids = (masked & cond_mask).long()
    return MaskedBatch(input_ids=input_ids, segment_ids=segment_ids, masked=masked)
