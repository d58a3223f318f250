"""Tokens pre-computed with the tokenizer and cached on disk (safetensors).

For each clip the cache holds the real video's tokens and the tokens of one task's condition
video (tasks assigned round-robin over the chosen subset, so every task gets the same share of
clips). COMMIT training then never runs the tokenizer.

Shapes: tokens [N_clips, t, h, w] (int32), tasks and labels [N_clips].
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from models.config import ModelConfig
from models.tasks import TASK_CODES, get_task
from models.tokenizer import VQTokenizer
from training.datasets import iter_batches


@dataclass
class TokenCache:
    tokens: torch.Tensor  # [N, t, h, w] real tokens
    cond_tokens: torch.Tensor  # [N, t, h, w] tokens of the condition video of `tasks[i]`
    tasks: torch.Tensor  # [N] task index (TASK_CODES order)
    labels: torch.Tensor  # [N] class labels

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _key(tokenizer_dir: Path, data: str, num_clips: int, tasks: tuple[str, ...]) -> str:
    weights = (tokenizer_dir / "tokenizer.safetensors").stat()
    raw = json.dumps([str(tokenizer_dir.resolve()), weights.st_size, weights.st_mtime_ns, data,
                      num_clips, tasks])  # fmt: skip
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@torch.no_grad()
def build_token_cache(
    tokenizer: VQTokenizer,
    config: ModelConfig,
    dataset,
    tasks: tuple[str, ...],
    num_clips: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    show_progress: bool = True,
    workers: int = 0,
) -> TokenCache:
    tokenizer = tokenizer.to(device).eval()
    n = min(num_clips, len(dataset))
    task_of = [TASK_CODES.index(tasks[i % len(tasks)]) for i in range(n)]
    tokens, conds, labels = [], [], []
    starts = range(0, n, batch_size)
    plan = [list(range(start, min(n, start + batch_size))) for start in starts]
    batches = iter_batches(dataset, plan, workers)
    bar = tqdm(starts, desc="caching tokens", disable=not show_progress)
    for start, (video, batch_labels) in zip(bar, batches, strict=True):
        video = video.to(device)
        labels += batch_labels.tolist()
        cond = torch.stack([
            get_task(TASK_CODES[task_of[start + j]]).condition_video(video[j : j + 1],
                                                                    config.cond_frames)[0]
            for j in range(video.shape[0])
        ])  # fmt: skip
        both = tokenizer.encode(torch.cat([video, cond]))  # one pass for real and condition
        tokens.append(both[: video.shape[0]].int().cpu())
        conds.append(both[video.shape[0] :].int().cpu())
    return TokenCache(
        torch.cat(tokens), torch.cat(conds), torch.tensor(task_of), torch.tensor(labels)
    )


def load_or_build(
    cache_dir: Path,
    tokenizer_dir: Path,
    data: str,
    build,
    num_clips: int,
    tasks: tuple[str, ...],
) -> TokenCache:
    """The cache for (tokenizer weights, data, size, tasks) under `cache_dir`, built once."""
    path = cache_dir / f"tokens-{_key(tokenizer_dir, data, num_clips, tasks)}.safetensors"
    if path.is_file():
        t = load_file(str(path))
        return TokenCache(t["tokens"], t["cond_tokens"], t["tasks"], t["labels"])
    cache: TokenCache = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # ranks may build the same cache at once
    save_file({"tokens": cache.tokens, "cond_tokens": cache.cond_tokens, "tasks": cache.tasks,
               "labels": cache.labels}, str(tmp))  # fmt: skip
    tmp.replace(path)
    return cache
