"""Tokens pre-computed with the tokenizer and cached on disk (safetensors).

For each clip the cache holds the real video's tokens and the tokens of the condition video of
every task of the chosen subset, so that COMMIT training can draw any task for any clip at every
step (as the paper and the official trainer do) and never runs the tokenizer.

Tasks whose condition videos are the same share one entry: a condition video is fixed by the
task's region and padding (FP and CFP both keep the first frames and repeat the last one), and a
task that takes no video (CG) conditions on the all-zero video, the same for every clip, so its
tokens are stored once for the whole cache. With all ten tasks that is 8 condition grids per
clip; ids are int16 when the codebook fits, so a 4x16x16-token, 20k-clip cache is ~370 MB.

Shapes: N clips, S distinct per-clip condition videos, (t, h, w) the token grid.
tokens [N, t, h, w], conditions [N, S, t, h, w], blank [t, h, w], slots [len(TASK_CODES)],
labels [N].
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from models.config import ModelConfig
from models.pipeline import tokenizer_memory_format
from models.tasks import TASK_CODES, Task, get_task
from models.tokenizer import VQTokenizer
from training.common import autocast_for
from training.datasets import iter_batches

# A task's entry in `TokenCache.slots`: an index into `conditions` (>= 0), or one of these.
BLANK = -1  # the task takes no video: its condition is the all-zero video (`blank`)
ABSENT = -2  # the task is not in the cache's subset

# Bump when the file layout changes, so that an older cache is rebuilt rather than misread.
_FORMAT = 2


@dataclass
class TokenCache:
    tokens: torch.Tensor  # [N, t, h, w] real tokens
    conditions: torch.Tensor  # [N, S, t, h, w] tokens of the distinct per-clip condition videos
    blank: torch.Tensor  # [t, h, w] tokens of the all-zero video (tasks without a video)
    slots: torch.Tensor  # [len(TASK_CODES)] where each task's condition is (see BLANK, ABSENT)
    labels: torch.Tensor  # [N] class labels

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def tasks(self) -> tuple[str, ...]:
        """The cached tasks, in TASK_CODES order."""
        slots = self.slots.tolist()
        return tuple(code for code, s in zip(TASK_CODES, slots, strict=True) if s != ABSENT)

    def condition_tokens(self, clips: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Condition tokens [B, t, h, w] (int64) of clip `clips[i]` under task `tasks[i]`
        (TASK_CODES indices), both [B]."""
        slot = self.slots[tasks]  # [B]
        if (slot == ABSENT).any():
            missing = sorted({TASK_CODES[int(t)] for t in tasks[slot == ABSENT]})
            raise KeyError(f"tasks {missing} are not in this token cache ({self.tasks})")
        out = self.blank.expand(len(clips), *self.blank.shape).clone()  # [B, t, h, w]
        per_clip = slot >= 0
        if per_clip.any():
            out[per_clip] = self.conditions[clips[per_clip], slot[per_clip]]
        return out.long()


def _signature(task: Task) -> tuple | None:
    """What fixes a task's condition video given a clip; None when it does not depend on it."""
    if not task.needs_video:
        return None
    return (task.region, task.padding)


def condition_slots(tasks: tuple[str, ...]) -> tuple[list[str], torch.Tensor]:
    """The tasks whose condition videos are stored per clip (one per distinct video, in
    TASK_CODES order) and each task's slot [len(TASK_CODES)]."""
    chosen = {get_task(t).code for t in tasks}
    slots = torch.full((len(TASK_CODES),), ABSENT, dtype=torch.long)
    owners: list[str] = []  # the first task of each distinct condition video
    seen: dict[tuple, int] = {}
    for i, code in enumerate(TASK_CODES):
        if code not in chosen:
            continue
        sig = _signature(get_task(code))
        if sig is None:
            slots[i] = BLANK
            continue
        if sig not in seen:
            seen[sig] = len(owners)
            owners.append(code)
        slots[i] = seen[sig]
    return owners, slots


def token_dtype(codebook_size: int) -> torch.dtype:
    """The smallest integer type that holds every token id."""
    return torch.int16 if codebook_size <= torch.iinfo(torch.int16).max + 1 else torch.int32


def _key(
    tokenizer_dir: Path, data: str, num_clips: int, tasks: tuple[str, ...], precision: str
) -> str:
    weights = (tokenizer_dir / "tokenizer.safetensors").stat()
    canonical = [code for code in TASK_CODES if code in {t.lower() for t in tasks}]
    raw = json.dumps(
        [
            _FORMAT,
            str(tokenizer_dir.resolve()),
            weights.st_size,
            weights.st_mtime_ns,
            data,
            num_clips,
            canonical,
            precision,
        ]
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@torch.no_grad()
def build_token_cache(
    tokenizer: VQTokenizer,
    config: ModelConfig,
    dataset,
    tasks: tuple[str, ...],
    num_clips: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    show_progress: bool = True,
    workers: int = 0,
    precision: str = "fp32",
) -> TokenCache:
    """Encode the first `num_clips` clips of `dataset` and their condition videos. A tokenizer
    pass takes `batch_size` videos, real and condition videos of several clips together, so its
    memory does not grow with the number of tasks. `precision` "bf16" encodes under bf16
    autocast (2x faster on a CPU with native bf16; 98% of the ids agree with fp32, about what
    the service's own bf16 path gives); the code search stays fp32 either way."""
    autocast = autocast_for(torch.device(device), precision)
    # In reduced precision on the CPU, the channels-last-3d layout the service uses (oneDNN's
    # bf16 3D convolutions: 1.65x faster encoding of video64 clips); the tokenizer is handed
    # back in the default layout.
    reduced = torch.float32 if precision == "fp32" else torch.bfloat16
    layout = tokenizer_memory_format(config, torch.device(device), reduced)
    tokenizer = tokenizer.to(device, memory_format=layout).eval()
    try:
        n = min(num_clips, len(dataset))
        owners, slots = condition_slots(tasks)
        cond_tasks = [get_task(code) for code in owners]
        lt, lh, lw = config.token_shape
        dtype = token_dtype(config.tokenizer.codebook_size)
        # Filled in place: no list of chunks to concatenate, so the peak is the cache itself.
        tokens = torch.empty(n, lt, lh, lw, dtype=dtype)
        conditions = torch.empty(n, len(owners), lt, lh, lw, dtype=dtype)
        labels = torch.empty(n, dtype=torch.long)
        blank_video = torch.zeros(1, 3, *config.video_shape, device=device).contiguous(
            memory_format=layout
        )
        blank = _encode(tokenizer, blank_video, autocast)[0].to(dtype).cpu()
        plan = [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]
        bar = tqdm(total=n, desc="caching tokens", disable=not show_progress)
        for index, (video, batch_labels) in zip(
            plan, iter_batches(dataset, plan, workers), strict=True
        ):
            video = video.to(device)  # [b, 3, T, H, W]
            b = video.shape[0]
            conds = [task.condition_video(video, config.cond_frames) for task in cond_tasks]
            every = torch.cat([video, *conds]).contiguous(memory_format=layout)
            ids = torch.cat(
                [_encode(tokenizer, c, autocast).to(dtype).cpu() for c in every.split(batch_size)]
            )
            rows = torch.tensor(index)
            tokens[rows] = ids[:b]
            conditions[rows] = ids[b:].view(len(owners), b, lt, lh, lw).transpose(0, 1)
            labels[rows] = batch_labels.long()
            bar.update(b)
        bar.close()
        return TokenCache(tokens, conditions, blank, slots, labels)
    finally:
        tokenizer.to(memory_format=torch.contiguous_format)


@torch.inference_mode()
def _encode(tokenizer: VQTokenizer, video: torch.Tensor, autocast) -> torch.Tensor:
    with autocast:  # the quantizer's code search leaves it: always fp32
        return tokenizer.encode(video)


def load_or_build(
    cache_dir: Path,
    tokenizer_dir: Path,
    data: str,
    build: Callable[[], TokenCache],
    num_clips: int,
    tasks: tuple[str, ...],
    precision: str = "fp32",
) -> TokenCache:
    """The cache for (tokenizer weights, data, size, set of tasks, precision) under
    `cache_dir`, built once and written atomically."""
    key = _key(tokenizer_dir, data, num_clips, tasks, precision)
    path = cache_dir / f"tokens-{key}.safetensors"
    if path.is_file():
        t = load_file(str(path))
        return TokenCache(t["tokens"], t["conditions"], t["blank"], t["slots"], t["labels"])
    cache = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # ranks may build the same cache at once
    save_file(
        {
            "tokens": cache.tokens,
            "conditions": cache.conditions,
            "blank": cache.blank,
            "slots": cache.slots,
            "labels": cache.labels,
        },
        str(tmp),
    )
    tmp.replace(path)
    return cache
