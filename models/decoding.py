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
    PhiloxStream,
    categorical_sampling_step,
    fused_sampling_step,
    gumbel_noise,
    remask_lowest,
    sampling_backend,
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


def counter_based_noise(device: torch.device) -> bool:
    """Whether the decoding loop draws Philox noise from (seed, step, token), as the fused
    kernel does: on CUDA, and wherever MAGVIT_SAMPLING=triton."""
    return device.type == "cuda" or sampling_backend() == "triton"


def _sample(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    known: torch.Tensor,
    options: DecodeOptions,
    choice_temperature: float,
    allowed: torch.Tensor | None,
    seeds: Sequence[int],
    generators: Sequence[torch.Generator],
    step: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sampling step over [B, N, K] logits. A request's noise comes from its own seed, so
    its sample does not depend on its batch mates. On CUDA (or with MAGVIT_SAMPLING=triton) the
    noise is counter-based Philox drawn inside the fused kernel from (seed, step, token): nothing
    is drawn on the host or copied. On the CPU, inverse-CDF sampling from each request's
    generator: one number a token instead of one a (token, code)."""
    b, n, k = logits.shape
    flat_logits, flat_tokens, flat_known = (
        logits.reshape(b * n, k),
        tokens.reshape(b * n),
        known.reshape(b * n),
    )
    allowed = None if allowed is None else allowed.reshape(b * n, k)
    if counter_based_noise(logits.device):
        stream = PhiloxStream.for_requests(seeds, n, step, logits.device)
        return fused_sampling_step(
            flat_logits.float(),
            flat_tokens,
            flat_known,
            options.temperature,
            choice_temperature,
            stream=stream,
            allowed=allowed,
        )
    # Every request draws its numbers for all its tokens, so that its stream does not depend on
    # how many are decided; only the undecided rows are sampled (a decided token keeps its id,
    # log-prob 0 and score +inf, as the step itself gives it), in fp32.
    uniform = torch.cat([torch.rand(n, generator=g) for g in generators]).to(logits.device)
    choice = torch.cat([gumbel_noise((n,), g, "cpu") for g in generators]).to(logits.device)
    rows = (~flat_known).nonzero().squeeze(1)
    if rows.numel() == b * n:  # nothing decided yet: no rows to pick
        return categorical_sampling_step(
            flat_logits,
            flat_tokens,
            flat_known,
            options.temperature,
            choice_temperature,
            uniform,
            choice,
            allowed,
        )
    pick = [x.index_select(0, rows) for x in (flat_logits, flat_tokens, flat_known)]
    sub = categorical_sampling_step(
        *pick,
        options.temperature,
        choice_temperature,
        uniform.index_select(0, rows),
        choice.index_select(0, rows),
        None if allowed is None else allowed.index_select(0, rows),
    )
    ids = flat_tokens.index_copy(0, rows, sub[0])
    log_prob = torch.zeros(b * n, device=logits.device).index_copy_(0, rows, sub[1])
    score = torch.full((b * n,), float("inf"), device=logits.device).index_copy_(0, rows, sub[2])
    return ids, log_prob, score


def _codebook_logits(
    transformer: nn.Module, ids: torch.Tensor, segments: torch.Tensor, k: int
) -> torch.Tensor:
    logits = transformer(ids, segments)  # [B, L, V], in the model's dtype (fp32 by the sampler)
    return logits[:, NUM_PREFIX_TOKENS:, :k]  # only codebook tokens are ever sampled


def unconditional_input(
    vocab: Vocabulary,
    ids: torch.Tensor,
    segments: torch.Tensor,
    unconditional_task: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unconditional branch of guidance, as the official code builds it
    (`maskgvt_train_lib.generate_masked_tokens`, `mask_utils.random_mask`): every condition
    token (segment 1) becomes [MASK]; the class slot holds the unconditional class token; the
    task slot holds `unconditional_task` (the full-generation task, CG, where the model has it)
    or keeps its task; the segment ids stay those of the conditional pass. ids, segments
    [B, L]; tokens already decided stay, so both branches see the same canvas."""
    ids_u = ids.masked_fill(segments.bool(), vocab.mask_id)
    ids_u[:, 1] = vocab.class_token(None)
    if unconditional_task is not None:
        ids_u[:, 0] = vocab.task_token(unconditional_task)
    return ids_u, segments


def guided_logits(
    transformer: nn.Module,
    vocab: Vocabulary,
    ids: torch.Tensor,
    segments: torch.Tensor,
    scale: float,
    unconditional_task: int | None = None,
) -> torch.Tensor:
    """Codebook logits [B, N, K] with classifier-free guidance c + scale * (c - u): both
    branches in one forward pass over the batch [c; u] of 2B sequences."""
    k = vocab.codebook_size
    if scale == 0:
        return _codebook_logits(transformer, ids, segments, k)
    ids_u, segs_u = unconditional_input(vocab, ids, segments, unconditional_task)
    both = _codebook_logits(transformer, torch.cat([ids, ids_u]), torch.cat([segments, segs_u]), k)
    c, u = both.float().chunk(2)
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
    unconditional_task: int | None = None,
) -> torch.Tensor:
    """Generate video tokens [B, N] given condition tokens [B, N] and the condition region
    `cond_mask` [B, N] (True = condition). One seed per batch element. `unconditional_task`:
    the task token of guidance's unconditional branch (see `unconditional_input`)."""
    b, n = cond_tokens.shape
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
        logits = guided_logits(
            transformer, vocab, ids, segs, options.guidance_scale, unconditional_task
        )  # [B, N, K]
        allowed = sampling_filter(logits, options.temperature, options.top_k, options.top_p)

        annealed = options.choice_temperature * (1.0 - (step + 1) / options.steps)
        sampled, _, score = _sample(
            logits, tokens, ~undecided, options, annealed, allowed, seeds, generators, step
        )
        sampled, score = sampled.view(b, n), score.view(b, n)

        num_remask = schedule.num_to_remask(step, options.steps, n, undecided.sum(1))
        remask = remask_lowest(score, num_remask)  # [B, N]
        tokens = torch.where(remask, masked_fill, sampled)
        undecided = remask
        if progress is not None:
            progress(StepInfo(step + 1, options.steps, tokens, undecided))
    return tokens
