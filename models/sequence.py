"""The transformer's input layout: [task token] [class token] [video tokens] (spec section 4).

Shapes: B batch, N video tokens, L = N + 2 sequence length.
The prefix tokens always have segment 0; a video token has segment 1 when it is a condition token
standing in a masked position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.config import Vocabulary

NUM_PREFIX_TOKENS = 2


def class_tokens(vocab: Vocabulary, class_ids: Sequence[int | None], device=None) -> torch.Tensor:
    """[B] class-token ids; None is the "unconditional" class (tasks without a class, and the
    class dropout of training), which guidance's unconditional branch also uses, as the
    official code (`decoding.unconditional_input`)."""
    return torch.tensor([vocab.class_token(c) for c in class_ids], dtype=torch.long, device=device)


def task_tokens(vocab: Vocabulary, task_index, batch: int, device) -> torch.Tensor:
    """[B, 1] task-token ids, from one task index (int) or one per sample (tensor [B])."""
    if isinstance(task_index, torch.Tensor):
        index = task_index.to(device).long().view(batch, 1)
        if index.numel() and not (int(index.min()) >= 0 and int(index.max()) < vocab.num_tasks):
            raise ValueError("task index out of range")
        return vocab.task_token(0) + index
    return torch.full((batch, 1), vocab.task_token(task_index), dtype=torch.long, device=device)


def build_sequence(
    vocab: Vocabulary,
    task_index: int | torch.Tensor,
    class_token_ids: torch.Tensor,
    video_ids: torch.Tensor,
    video_segments: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefix the video tokens [B, N] with the task and class tokens; returns ids and segment ids
    [B, N + 2]. `task_index` is one index for the batch or one per sample."""
    b = video_ids.shape[0]
    task = task_tokens(vocab, task_index, b, video_ids.device)
    ids = torch.cat([task, class_token_ids.view(b, 1).to(video_ids.device), video_ids], dim=1)
    zeros = torch.zeros(b, NUM_PREFIX_TOKENS, dtype=torch.long, device=video_ids.device)
    segments = torch.cat([zeros, video_segments.long()], dim=1)
    return ids, segments
