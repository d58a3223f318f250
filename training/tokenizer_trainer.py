"""Training the 3D-VQ tokenizer (spec section 3).

Loss of the tokenizer (generator): L2 reconstruction + quantizer losses + 0.1 x perceptual
(when VGG weights are given) + 0.1 x non-saturating adversarial (from `adv_start`). The
discriminator: non-saturating loss + R1 (cost 10) + LeCam with EMAs of its outputs.
Adam (beta1 0, beta2 0.99) with warm-up and cosine decay; gradient clipping; generator EMA,
whose weights are what the checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import get_config
from models.inflation import inflate_2d_to_3d
from models.tokenizer import VQTokenizer
from training import gan
from training.augment import ColourJitter
from training.codebook import CodeRestarts
from training.common import (
    EMA,
    STATE_TENSORS,
    all_reduce_mean,
    autocast_for,
    batch_indices,
    has_training_state,
    init_distributed,
    load_training_state,
    lr_at,
    save_training_state,
    wrap_ddp,
)
from training.configs import TokenizerTrainConfig
from training.datasets import iter_batches, make_dataset
from training.logs import MetricsLog, plot_curves, save_grid


def _ema_decay(decay: float, step: int) -> float:
    # Warm-up of the EMA: early weights are not averaged with the random init for long.
    return min(decay, (1 + step) / (10 + step))


def train_tokenizer(cfg: TokenizerTrainConfig) -> Path:
    info = init_distributed(cfg.device)
    autocast = autocast_for(info.device, cfg.precision)  # a bad setting fails before any work
    # On a CPU the discriminator runs in fp32 whatever the setting: oneDNN's bf16 weight
    # gradients of its small deep convolutions come back NaN at random on a CPU with AVX-512
    # BF16 and no AMX (6 of 40 backward passes of the tiny preset's discriminator, at a
    # [2, 32, 2, 4, 4] input), which poisons the discriminator and then the generator.
    disc_autocast = autocast if info.device.type == "cuda" else torch.autocast("cpu", enabled=False)
    model_cfg = get_config(cfg.config)
    out = Path(cfg.out)
    log = MetricsLog(out / "metrics.jsonl")
    torch.manual_seed(cfg.seed)

    tokenizer = VQTokenizer(model_cfg.tokenizer).to(info.device)
    if cfg.init_2d and cfg.init:
        raise ValueError("--init and --init-2d exclude each other")
    if cfg.init_2d:
        src = load_checkpoint(cfg.init_2d)
        if dataclasses.replace(src.config.tokenizer, conv_dim=3) != model_cfg.tokenizer:
            raise ValueError(
                f"the 2D tokenizer in {cfg.init_2d} does not have the widths of "
                f"preset {cfg.config!r}: it cannot inflate into it"
            )
        state_2d = {k: v.float() for k, v in src.tokenizer_state.items()}
        tokenizer.load_state_dict(inflate_2d_to_3d(state_2d, model_cfg.tokenizer))
    if cfg.init:
        src = load_checkpoint(cfg.init)
        if src.config.tokenizer != model_cfg.tokenizer:
            raise ValueError(f"the tokenizer in {cfg.init} is not the one of preset {cfg.config!r}")
        tokenizer.load_state_dict({k: v.float() for k, v in src.tokenizer_state.items()})
    if cfg.decoder_only:
        if not cfg.init:
            raise ValueError("--decoder-only needs --init: the tokenizer whose decoder to train")
        tokenizer.encoder.requires_grad_(False)
        tokenizer.quantizer.requires_grad_(False)
    use_gan = cfg.adv_start < cfg.steps
    # A 2D preset trains on single frames of the same data (spec section 2: 2D pre-training,
    # then central inflation into the 3D tokenizer with --init-2d).
    image_model = model_cfg.tokenizer.conv_dim == 2
    if image_model and model_cfg.num_frames != 1:
        raise ValueError(f"the 2D preset {cfg.config!r} must take 1 frame per clip")
    disc = gan.Discriminator(
        model_cfg.tokenizer.filters,
        model_cfg.frame_size,
        num_frames=None if image_model else model_cfg.num_frames,
        dims=2 if image_model else 3,
    )
    if cfg.init_2d:  # the 2D run's discriminator inflates too (the EMA starts from the inflated)
        disc_2d = _discriminator_2d(Path(cfg.init_2d), model_cfg)
        if disc_2d is not None:
            disc.load_state_dict(gan.inflate_discriminator_2d(disc_2d, disc))
    disc = disc.to(info.device)
    trainable = [p for p in tokenizer.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=cfg.lr, betas=(cfg.beta1, 0.99))
    disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.0, 0.99))
    ema = EMA(tokenizer, cfg.ema_decay)
    lecam = gan.LeCamEMA()
    restart_every = 0 if cfg.decoder_only else cfg.restart_every  # the codebook is frozen
    restarts = CodeRestarts(
        model_cfg.tokenizer.codebook_size, restart_every, cfg.restart_after, cfg.seed
    )
    from training.perceptual import make_perceptual_loss

    perceptual = make_perceptual_loss(cfg.perceptual_kind, cfg.perceptual_weights)
    if perceptual is not None:
        perceptual = perceptual.to(info.device)

    modules = {"tokenizer": tokenizer, "discriminator": disc}
    optimizers = {"tokenizer": opt, "discriminator": disc_opt}
    start = 0
    if cfg.resume and has_training_state(out):
        meta = load_training_state(out, modules, optimizers, {"tokenizer": ema})
        start = meta["step"]
        lecam.real, lecam.fake = meta["extra"]["lecam"]
        restarts.load_state(meta["extra"].get("last_used", restarts.state()))
        if info.is_main:
            log.truncate_after(start)
    if info.is_main:
        notes = {
            "event": "start",
            "step": start,
            "config": dataclasses.asdict(cfg),
            "world_size": info.world_size,
            "gan": use_gan,
            "perceptual": perceptual is not None,
        }
        if perceptual is None:
            print("perceptual loss: off (no weights given by --perceptual-weights)")
        log.write(notes)

    train_model = wrap_ddp(tokenizer, info)
    train_disc = wrap_ddp(disc, info)
    dataset = make_dataset(cfg.data, model_cfg, "train", frame_stride=cfg.frame_stride)
    if cfg.colour_jitter:
        dataset = ColourJitter(dataset, cfg.colour_jitter, cfg.seed)
    end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    plan = [
        info.shard(batch_indices(cfg.seed, step, cfg.batch_size, len(dataset)))
        for step in range(start, end)
    ]
    batches = iter_batches(dataset, plan, cfg.workers, pin=info.device.type == "cuda")
    bar = tqdm(
        range(start, end),
        initial=start,
        total=cfg.steps,
        desc="tokenizer",
        disable=not info.is_main,
    )
    t0 = time.perf_counter()
    for step, (video, _) in zip(bar, batches, strict=True):
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        video = video.to(info.device, non_blocking=True)
        if image_model:
            video = video[:, :, 0]  # single frames [B, 3, 1, H, W] -> [B, 3, H, W]
        gan_on = use_gan and step >= cfg.adv_start

        with autocast:
            result = train_model(video)
            recon = result.reconstruction.float()
            rec_loss = F.mse_loss(recon, video)
            q = result.losses
            entropy_weight = (
                model_cfg.tokenizer.entropy_loss_ratio
                if cfg.entropy_weight is None
                else cfg.entropy_weight
            )
            loss = rec_loss + q["commitment"] + q["codebook"] + entropy_weight * q["entropy"]
            metrics = {
                "recon": rec_loss,
                "quantizer": result.losses["quantizer"],
                "entropy": result.losses["entropy"],
            }
            if perceptual is not None:  # per frame; a 2D model's frames are 1-frame clips
                p = (
                    perceptual(recon.unsqueeze(2), video.unsqueeze(2))
                    if image_model
                    else perceptual(recon, video)
                )
                loss = loss + cfg.perceptual_weight * p
                metrics["perceptual"] = p
            if gan_on:
                disc.requires_grad_(False)
                with disc_autocast:
                    g_adv = gan.generator_loss(train_disc(recon.float()))
                disc.requires_grad_(True)
                loss = loss + cfg.adv_weight * g_adv
                metrics["g_adv"] = g_adv
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        moved = restarts.step(step, tokenizer.quantizer.codebook.data, result.ids, result.features)
        ema.decay = _ema_decay(cfg.ema_decay, step)
        ema.update(tokenizer)

        if gan_on:
            metrics.update(
                _discriminator_step(
                    cfg, train_disc, disc_opt, lecam, video, recon, step, disc_autocast
                )
            )
        metrics["loss"] = loss
        metrics["codes_used"] = torch.tensor(float(result.ids.unique().numel()), device=info.device)
        metrics["codes_restarted"] = torch.tensor(float(moved), device=info.device)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            # Every rank takes part in the reduction; only the first writes.
            record = {k: float(all_reduce_mean(v.detach(), info)) for k, v in metrics.items()}
        if info.is_main and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            record.update(
                step=step, lr=lr, psnr=_psnr(record["recon"]), seconds=time.perf_counter() - t0
            )
            log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{record['psnr']:.1f}")
        done = step + 1
        final = done == cfg.steps or done == cfg.stop_at
        if (done % cfg.checkpoint_every == 0 or final) and info.is_main:
            _checkpoint(
                cfg,
                out,
                done,
                model_cfg,
                tokenizer,
                ema,
                modules,
                optimizers,
                {"lecam": [lecam.real, lecam.fake], "last_used": restarts.state()},
                log,
                video,
            )
    return out


def _discriminator_2d(run: Path, model_cfg) -> dict[str, torch.Tensor] | None:
    """The discriminator of a 2D tokenizer run (its training state), if it has one of the 2D
    architecture for this preset's widths."""
    if not has_training_state(run):
        return None
    from safetensors.torch import load_file

    prefix = "module/discriminator/"
    tensors = load_file(str(run / STATE_TENSORS))
    state = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
    probe = gan.Discriminator(model_cfg.tokenizer.filters, model_cfg.frame_size, dims=2)
    try:
        probe.load_state_dict(state)
    except RuntimeError:  # another architecture (or none stored): the 3D one starts afresh
        print(f"{run}: no 2D discriminator of these widths to inflate; it starts afresh")
        return None
    return state


def _discriminator_step(cfg, disc, disc_opt, lecam, video, recon, step, autocast) -> dict:
    real = video.detach().requires_grad_(step % cfg.r1_every == 0)
    with autocast:
        real_logits = disc(real).float()
        fake_logits = disc(recon.detach()).float()
    d_loss = gan.discriminator_loss(real_logits, fake_logits)
    reg = cfg.lecam_weight * gan.lecam_loss(real_logits, fake_logits, lecam.real, lecam.fake)
    out = {"d_loss": d_loss.detach()}
    if real.requires_grad:
        r1 = gan.r1_penalty(real_logits, real)
        reg = reg + cfg.r1_cost * cfg.r1_every * r1
        out["r1"] = r1.detach()
    lecam.update(real_logits.detach(), fake_logits.detach())
    disc_opt.zero_grad(set_to_none=True)
    (d_loss + reg).backward()
    torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.grad_clip)
    disc_opt.step()
    return out


def _psnr(mse: float) -> float:
    import math

    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def _checkpoint(cfg, out, step, model_cfg, tokenizer, ema, modules, optimizers, extra, log, video):
    save_training_state(out, step, modules, optimizers, {"tokenizer": ema}, extra)
    metadata = {"kind": "tokenizer", "steps": step, "data": cfg.data, "ema": True}
    if cfg.init:
        metadata |= {"init": cfg.init, "decoder_only": cfg.decoder_only}
    save_checkpoint(out, model_cfg, ema.shadow, None, metadata)
    records = [r for r in log.read() if "loss" in r]
    keys = [
        k
        for k in ("recon", "psnr", "codes_used", "quantizer", "d_loss")
        if any(k in r for r in records)
    ]
    plot_curves(records, keys, out / "curves.png", "tokenizer")
    ema_model = VQTokenizer(model_cfg.tokenizer).to(video.device).eval()
    ema_model.load_state_dict(ema.shadow)
    recon = ema_model.decode(ema_model.encode(video[:2])).clamp(0, 1)
    if video.ndim == 4:  # frames of a 2D tokenizer: shown as 1-frame clips
        video, recon = video.unsqueeze(2), recon.unsqueeze(2)
    rows = []
    for i in range(recon.shape[0]):
        rows += [(f"real {i}", video[i]), (f"recon {i}", recon[i])]
    save_grid(rows, out / "samples.png")
