"""COMMIT non-autoregressive decoding (spec section 7) as one visible loop.

Shapes: B batch, N video tokens, K codebook size, L = N + 2 sequence length.

Start from the multivariate mask: condition-region positions hold condition tokens (segment 1),
the others [MASK]. Each step samples every undecided position, scores it by its log-probability
plus annealed Gumbel noise, and re-masks the lowest-scoring ones according to the mask schedule,
refilling condition-region positions with condition tokens. The last step decides everything, so
condition tokens are refined, not copied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.config import Vocabulary
from models.kernels.sampling import (
    fused_sampling_step,
    gumbel_noise,
    remask_lowest,
    sampling_filter,
)
from models.options import DECODE_PRESETS, DecodeOptions  # noqa: F401 (re-exported)
from models.schedule import MaskSchedule
from models.sequence import NUM_PREFIX_TOKENS, build_sequence, class_tokens


@dataclass
class StepInfo:
    step: int  # completed steps, 1..num_steps
    num_steps: int
    tokens: torch.Tensor  # [B, N] current ids; mask id (or a condition token) where undecided
    undecided: torch.Tensor  # [B, N] bool


ProgressFn = Callable[[StepInfo], None]


def _noise(generators: Sequence[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor:
    """Per-element noise so that a request's sample does not depend on its batch mates."""
    return torch.stack([gumbel_noise(shape, g, "cpu") for g in generators]).to(device)


def _codebook_logits(
    transformer: nn.Module, ids: torch.Tensor, segments: torch.Tensor, k: int
) -> torch.Tensor:
    logits = transformer(ids, segments)  # [B, L, V]
    return logits[:, NUM_PREFIX_TOKENS:, :k].float()  # only codebook tokens are ever sampled


def unconditional_input(
    vocab: Vocabulary, ids: torch.Tensor, segments: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unconditional branch of guidance, as the official code: the task token, the class
    token and every condition token (segment 1) become [MASK], with segment 0. ids, segments
    [B, L]; sampled tokens already decided stay, so both branches see the same canvas."""
    drop = segments.bool()
    drop[:, :NUM_PREFIX_TOKENS] = True
    return ids.masked_fill(drop, vocab.mask_id), torch.zeros_like(segments)


def guided_logits(
    transformer: nn.Module,
    vocab: Vocabulary,
    ids: torch.Tensor,
    segments: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Codebook logits [B, N, K] with classifier-free guidance c + scale * (c - u): both
    branches in one forward pass over the batch [c; u] of 2B sequences."""
    k = vocab.codebook_size
    if scale == 0:
        return _codebook_logits(transformer, ids, segments, k)
    ids_u, segs_u = unconditional_input(vocab, ids, segments)
    both = _codebook_logits(transformer, torch.cat([ids, ids_u]), torch.cat([segments, segs_u]), k)
    c, u = both.chunk(2)
    return c + scale * (c - u)


@torch.no_grad()
def decode(
    transformer: nn.Module,
    vocab: Vocabulary,
    task_index: int,
    class_ids: Sequence[int | None],
    cond_tokens: torch.Tensor,
    cond_mask: torch.Tensor,
    seeds: Sequence[int],
    options: DecodeOptions = DecodeOptions(),
    progress: ProgressFn | None = None,
    schedule: MaskSchedule | None = None,
) -> torch.Tensor:
    """Generate video tokens [B, N] given condition tokens [B, N] and the condition region
    `cond_mask` [B, N] (True = condition). One seed per batch element."""
    b, n = cond_tokens.shape
    k = vocab.codebook_size
    device = cond_tokens.device
    if len(seeds) != b or len(class_ids) != b:
        raise ValueError("need one seed and one class id per batch element")
    if schedule is None:
        schedule = MaskSchedule(options.schedule)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    cond_mask = cond_mask.to(device).expand(b, n)
    masked_fill = torch.where(cond_mask, cond_tokens, torch.full_like(cond_tokens, vocab.mask_id))
    cls = class_tokens(vocab, class_ids, device)

    tokens = masked_fill
    undecided = torch.ones(b, n, dtype=torch.bool, device=device)
    for step in range(options.steps):
        segments = (undecided & cond_mask).long()
        ids, segs = build_sequence(vocab, task_index, cls, tokens, segments)
        logits = guided_logits(transformer, vocab, ids, segs, options.guidance_scale)  # [B,N,K]
        allowed = sampling_filter(logits, options.temperature, options.top_k, options.top_p)

        annealed = options.choice_temperature * (1.0 - (step + 1) / options.steps)
        sampled, _, score = fused_sampling_step(
            logits.reshape(b * n, k),
            tokens.reshape(b * n),
            (~undecided).reshape(b * n),
            temperature=options.temperature,
            choice_temperature=annealed,
            gumbel_sample=_noise(generators, (n, k), device).reshape(b * n, k),
            gumbel_choice=_noise(generators, (n,), device).reshape(b * n),
            allowed=None if allowed is None else allowed.reshape(b * n, k),
        )
        sampled, score = sampled.view(b, n), score.view(b, n)

        num_remask = schedule.num_to_remask(step, options.steps, n, undecided.sum(1))
        remask = remask_lowest(score, num_remask)  # [B, N]
        tokens = torch.where(remask, masked_fill, sampled)
        undecided = remask
        if progress is not None:
            progress(StepInfo(step + 1, options.steps, tokens, undecided))
    return tokens
