"""The mask schedule, shared by COMMIT training (to mask) and decoding (to unmask).

Shapes: B batch, N video tokens (t * h * w, flattened in t, h, w order).

A schedule maps x in [0, 1] to the masked fraction r(x), clipped to [1e-6, 1] as the official
`mask_schedule.schedule` does. The official methods, N the number of maskable tokens:
  cosine   cos(pi/2 * x)                      (the default, spec sections 6 and 7)
  uniform  1 - x        (also `linear`, the same as `pow1`)
  powP     1 - x^P      (e.g. `pow2`, `pow2.5`)
  log      -log2(x) / log2(N)
  exp      1 - 2^(-log2(N) * (1 - x))         (the official BAIR frame-prediction evaluation)

Training (spec section 6): r = r(u), u ~ U[0, 1); floor(r * N) random tokens are masked.
Masked positions inside the task's condition region receive the condition tokens (segment 1);
masked positions outside it receive [MASK]; the others keep the real tokens. Targets are always
the real tokens.

Decoding (spec section 7): after step s of S the fraction r((s+1)/S) of the tokens stays masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.options import check_schedule, schedule_exponent

# The official schedule never returns exactly 0: it clips the ratio at this floor.
_MIN_RATIO = 1e-6


@dataclass(frozen=True)
class MaskSchedule:
    """A mask schedule by its official name (see the module docstring)."""

    method: str = "cosine"

    def __post_init__(self) -> None:
        check_schedule(self.method)

    def _needs_tokens(self) -> bool:
        return self.method in ("log", "exp")

    def ratio(self, x: float, num_tokens: int | None = None) -> float:
        """Masked fraction r(x); `log` and `exp` need the number of maskable tokens."""
        return float(self.ratios(torch.tensor([float(x)], dtype=torch.float64), num_tokens)[0])

    def ratios(self, x: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
        """r(x) elementwise, clipped to [1e-6, 1]."""
        if self._needs_tokens() and num_tokens is None:
            raise ValueError(f"the {self.method} schedule needs the number of tokens")
        m = self.method
        if m == "cosine":
            r = torch.cos(math.pi / 2 * x)
        elif m in ("uniform", "linear"):
            r = 1.0 - x
        elif m == "log":
            r = -torch.log2(x) / math.log2(num_tokens)  # x = 0 gives inf, clipped to 1
        elif m == "exp":
            r = 1.0 - torch.exp2(-math.log2(num_tokens) * (1.0 - x))
        else:
            r = 1.0 - x ** schedule_exponent(m)
        return r.clamp(_MIN_RATIO, 1.0)

    def decoding_ratios(self, steps: int, num_tokens: int | None = None) -> list[float]:
        """Masked fraction after each of `steps` decoding steps."""
        return [self.ratio((s + 1) / steps, num_tokens) for s in range(steps)]

    def num_to_remask(self, step: int, steps: int, num_tokens: int, num_unknown: torch.Tensor):
        """How many tokens to re-mask after `step` (0-based): floor(ratio * N), at least 1 and at
        most unknown - 1, so every step fixes at least one token; the last step fixes all."""
        if step == steps - 1:
            return torch.zeros_like(num_unknown)
        n = math.floor(self.ratio((step + 1) / steps, num_tokens) * num_tokens)
        return torch.clamp(torch.full_like(num_unknown, n), min=1).minimum(num_unknown - 1).clamp(0)

    def training_ratio(
        self, batch: int, generator: torch.Generator | None = None, num_tokens: int | None = None
    ) -> torch.Tensor:
        """One mask ratio per sample: r(u), u ~ U[0, 1). Returns [B]."""
        u = torch.rand(batch, generator=generator)
        return self.ratios(u, num_tokens).float()


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
    ratio = schedule.training_ratio(b, generator, n)  # [B]
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
