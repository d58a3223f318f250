"""Training the bidirectional transformer with multi-task COMMIT (spec section 6).

Each sample is a cached clip under a task drawn for it at this step (uniformly from the chosen
tasks, as a function of (seed, step), so every clip is seen under every task and a resumed run
sees the same batches): COMMIT masking (`models.schedule.commit_mask`), class tokens for the
class tasks (dropped to "unconditional" with probability `class_dropout`), cross-entropy on every
video token with label smoothing. AdamW (0.9, 0.96) with weight decay 0.045 on kernels only (as
the official optimizer), warm-up and cosine decay, gradient clipping 1.0, EMA.
The output directory is a complete checkpoint (tokenizer + transformer).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig, get_config
from models.options import DecodeOptions
from models.pipeline import MagvitPipeline, build_transformer, load_tokenizer
from models.schedule import commit_mask
from models.sequence import build_sequence
from models.tasks import TASK_CODES, get_task
from training.augment import ColourJitter
from training.common import (
    EMA,
    all_reduce_mean,
    autocast_for,
    batch_indices,
    has_training_state,
    init_distributed,
    load_training_state,
    lr_at,
    resolve_precision,
    save_training_state,
    wrap_ddp,
)
from training.configs import TransformerTrainConfig
from training.datasets import make_dataset
from training.logs import MetricsLog, plot_curves, save_grid
from training.token_cache import TokenCache, build_token_cache, load_or_build

# Seeds the per-example task draw apart from the clips' (`batch_indices` uses [seed, step]).
_TASK_STREAM = 1


def parse_tasks(spec: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    tasks = tuple(t.strip().lower() for t in spec.split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASK_CODES or t not in allowed]
    if not tasks or unknown:
        raise KeyError(f"unknown or unsupported tasks {unknown}; choose from {', '.join(allowed)}")
    return tasks


def step_tasks(seed: int, step: int, batch_size: int, tasks: tuple[str, ...]) -> torch.Tensor:
    """The task of each example of one global batch [B] (TASK_CODES indices), drawn uniformly
    from `tasks`: a function of (seed, step) alone, like the batch's clips."""
    rng = np.random.default_rng([seed, step, _TASK_STREAM])
    choice = rng.integers(0, len(tasks), size=batch_size)
    return torch.tensor([TASK_CODES.index(tasks[i]) for i in choice.tolist()], dtype=torch.long)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on the kernels of linear and conv layers only; embeddings (and so
    the tied output matrix), LayerNorms and biases are not decayed, as in the official
    optimizer, whose decay mask takes Flax's `kernel` parameters."""
    kernels = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
    }
    decay = [p for p in model.parameters() if id(p) in kernels]
    rest = [p for p in model.parameters() if id(p) not in kernels]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def commit_batch(
    cache: TokenCache,
    indices: list[int],
    tasks: torch.Tensor,
    config: ModelConfig,
    generator: torch.Generator,
    class_dropout: float,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, segments and targets of one COMMIT batch of clips `indices` under `tasks` [B]:
    ids [B, L], segments [B, L], targets [B, N]."""
    vocab = config.vocab
    lt, lh, lw = config.token_shape
    idx = torch.tensor(indices)
    tokens = cache.tokens[idx].flatten(1).long()  # [B, N]
    cond_tokens = cache.condition_tokens(idx, tasks).flatten(1)  # [B, N]
    masks = {
        t: get_task(TASK_CODES[t]).token_mask(lt, lh, lw, config.cond_latent_frames).flatten()
        for t in set(tasks.tolist())
    }
    cond_mask = torch.stack([masks[t] for t in tasks.tolist()])  # [B, N]
    masked = commit_mask(tokens, cond_tokens, cond_mask, vocab.mask_id, generator=generator)
    drop = torch.rand(len(indices), generator=generator) < class_dropout
    classes = [
        int(label) if get_task(TASK_CODES[t]).needs_class and not d else None
        for label, t, d in zip(
            cache.labels[idx].tolist(), tasks.tolist(), drop.tolist(), strict=True
        )
    ]
    class_ids = torch.tensor([vocab.class_token(c) for c in classes])
    ids, segments = build_sequence(vocab, tasks, class_ids, masked.input_ids, masked.segment_ids)
    return ids.to(device), segments.to(device), tokens.to(device)


def train_transformer(cfg: TransformerTrainConfig) -> Path:
    info = init_distributed(cfg.device)
    autocast = autocast_for(info.device, cfg.precision)  # a bad setting fails before caching
    config = get_config(cfg.config)
    tok_ckpt = load_checkpoint(cfg.tokenizer)
    if tok_ckpt.config.tokenizer != config.tokenizer:
        raise KeyError(f"the tokenizer in {cfg.tokenizer} is not the one of preset {cfg.config!r}")
    tasks = parse_tasks(cfg.tasks, config.tasks)
    config = dataclasses.replace(config, tasks=tasks)
    dataset = make_dataset(cfg.data, config, "train")
    # The checkpoint says what its classes mean and at what frame rate it learnt motion.
    names = tuple(getattr(dataset, "class_names", ()))
    if len(names) == config.num_classes:
        config = dataclasses.replace(config, class_names=names)
    config = dataclasses.replace(
        config,
        frame_stride=getattr(dataset, "frame_stride", 1),
        frame_rate=getattr(dataset, "frame_rate", None),
    )
    data_key = cfg.data
    if cfg.colour_jitter:  # the clips the tokens are cached from: other colours, another cache
        dataset = ColourJitter(dataset, cfg.colour_jitter, cfg.seed)
        data_key = f"{cfg.data} colour-jitter {cfg.colour_jitter} seed {cfg.seed}"
    out = Path(cfg.out)
    log = MetricsLog(out / "metrics.jsonl")

    def build():
        tokenizer = load_tokenizer(tok_ckpt)
        return build_token_cache(
            tokenizer,
            config,
            dataset,
            tasks,
            cfg.cache_clips,
            device=info.device,
            show_progress=info.is_main,
            workers=cfg.workers,
            precision=precision,
        )

    precision = resolve_precision(info.device, cfg.precision)
    cache = load_or_build(
        Path(cfg.out) / "cache",
        Path(cfg.tokenizer),
        data_key,
        build,
        cfg.cache_clips,
        tasks,
        precision,
    )
    torch.manual_seed(cfg.seed)
    model = build_transformer(config).to(info.device)
    if cfg.attention_dropout is not None:
        model.set_attention_dropout(cfg.attention_dropout)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.96))
    ema = EMA(model, cfg.ema_decay)
    start, rewarm_from = 0, None
    if cfg.resume and has_training_state(out):
        meta = load_training_state(
            out, {"transformer": model}, {"transformer": opt}, {"transformer": ema}
        )
        start = meta["step"]
        if start and "transformer" not in meta["optimizers"]:
            # A snapshot carries no optimizer moments: Adam's first steps from fresh moments
            # are full-size at the schedule's rate (the loss jumped for a few hundred steps),
            # so the rate warms up again, over `warmup_steps`, from the step it resumes at.
            rewarm_from = start
        if info.is_main:
            log.truncate_after(start)
    if info.is_main:
        log.write(
            {
                "event": "start",
                "step": start,
                "config": dataclasses.asdict(cfg),
                "world_size": info.world_size,
                "cached_clips": len(cache),
            }
        )
    train_model = wrap_ddp(model, info)
    k = config.vocab.codebook_size
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc="transformer",
        disable=not info.is_main,
    )
    t0 = time.perf_counter()
    for step in bar:
        if cfg.stop_at is not None and step >= cfg.stop_at:
            break
        model.train()
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps)
        if rewarm_from is not None and cfg.warmup_steps:
            lr *= min(1.0, (step - rewarm_from + 1) / cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        # Clips, tasks, masks and class dropout are drawn for the whole global batch from
        # (seed, step), then each rank takes its rows: any world size sees the same batch.
        # Dropout is per rank.
        indices = batch_indices(cfg.seed, step, cfg.batch_size, len(cache))
        step_task = step_tasks(cfg.seed, step, cfg.batch_size, tasks)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        torch.manual_seed(cfg.seed + step * 7919 + info.rank)
        ids, segments, targets = (
            info.shard(list(x))
            for x in commit_batch(
                cache, indices, step_task, config, g, cfg.class_dropout, info.device
            )
        )
        ids, segments, targets = torch.stack(ids), torch.stack(segments), torch.stack(targets)
        with autocast:
            logits = train_model(ids, segments, first=2, vocab=k).float()  # [B, N, K]
            loss = F.cross_entropy(
                logits.reshape(-1, k), targets.reshape(-1), label_smoothing=cfg.label_smoothing
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema.decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        ema.update(model)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            mean_loss = float(all_reduce_mean(loss.detach(), info))  # every rank takes part
        if info.is_main and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            masked = ids[:, 2:] != targets
            acc = (logits.argmax(-1) == targets).float()
            record = {
                "step": step,
                "lr": lr,
                "loss": mean_loss,
                "masked_accuracy": float(acc[masked].mean()) if masked.any() else 1.0,
                "seconds": time.perf_counter() - t0,
            }
            log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['masked_accuracy']:.2f}")
        done = step + 1
        final = done == cfg.steps or done == cfg.stop_at
        if (done % cfg.checkpoint_every == 0 or final) and info.is_main:
            save_training_state(
                out, done, {"transformer": model}, {"transformer": opt}, {"transformer": ema}
            )
            metadata = {
                "kind": "magvit",
                "transformer_steps": done,
                "data": cfg.data,
                "tokenizer": tok_ckpt.metadata,
                "tasks": list(tasks),
                "attention_dropout": (
                    config.transformer.dropout
                    if cfg.attention_dropout is None
                    else cfg.attention_dropout
                ),
            }
            save_checkpoint(out, config, tok_ckpt.tokenizer_state, ema.shadow, metadata)
            records = [r for r in log.read() if "loss" in r]
            plot_curves(records, ["loss", "masked_accuracy"], out / "curves.png", "transformer")
            _samples(out, cfg, config)
    return out


@torch.no_grad()
def _samples(out: Path, cfg: TransformerTrainConfig, config) -> None:
    """One generated clip per task on held-out data, as a PNG grid."""
    pipe = MagvitPipeline.from_checkpoint(out)
    video, label = make_dataset(cfg.data, config, "eval", num_clips=1)[0]
    rows = [("input", video)]
    for code in config.tasks:
        task = get_task(code)
        result = pipe.generate(
            code, video[None] if task.needs_video else None, [label], [0], DecodeOptions()
        )
        rows.append((code, result[0]))
    save_grid(rows, out / "samples.png")
