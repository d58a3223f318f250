"""The training runs' settings as plain dataclasses (no torch): `magvit train` builds its flags
from them without loading the trainers."""

from __future__ import annotations

from dataclasses import dataclass

from models.tasks import TASK_CODES


@dataclass
class TokenizerTrainConfig:
    config: str = "default"
    data: str = "synthetic"
    frame_stride: int | None = None  # frames between a window's frames; None: the folder's own
    # Colour augmentation of half the training clips (`training/augment.py`), 0-1; 0: off.
    colour_jitter: float = 0.0
    out: str = "runs/tokenizer"
    steps: int = 1000
    batch_size: int = 8  # global, over all ranks
    lr: float = 1e-4
    beta1: float = 0.0  # Adam (beta1, 0.99); the spec's 0 suits the GAN phase
    entropy_weight: float | None = None  # None: the tokenizer config's entropy_loss_ratio
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # The official perceptual loss is the L2 of ResNet-50 ImageNet logits ("resnet50"); "vgg16"
    # is the LPIPS-style one. Weights by path (safetensors, torchvision names); none: off.
    perceptual_kind: str = "resnet50"
    perceptual_weights: str | None = None
    perceptual_weight: float = 0.1
    adv_weight: float = 0.1
    adv_start: int = 0  # step from which the GAN trains; >= steps turns it off
    disc_lr: float = 1e-4
    r1_cost: float = 10.0
    r1_every: int = 4  # lazy R1, scaled by the interval
    lecam_weight: float = 0.001
    restart_every: int = 50  # move codes unused for `restart_after` steps onto features; 0: off
    restart_after: int = 200
    init_2d: str | None = None  # a 2D tokenizer checkpoint to inflate (central)
    init: str | None = None  # a tokenizer checkpoint of this preset whose weights start the run
    # Train the decoder alone (needs `init`): the encoder and the codebook stay bit for bit, so
    # videos keep their tokens and a transformer trained on them keeps working.
    decoder_only: bool = False
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 250
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bf16) | bf16 | fp32
    workers: int = 0  # processes that make batches ahead (0: in the training loop)
    resume: bool = True
    stop_at: int | None = None  # end this run early (time-limited jobs); resume goes on


@dataclass
class TransformerTrainConfig:
    config: str = "default"
    tokenizer: str = "runs/tokenizer"
    data: str = "synthetic"
    out: str = "runs/transformer"
    tasks: str = ",".join(TASK_CODES)
    steps: int = 2000
    batch_size: int = 32  # global, over all ranks
    lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.045
    grad_clip: float = 1.0
    label_smoothing: float = 1e-4
    ema_decay: float = 0.999
    # Probability that a class task's sample gets the "unconditional" class token instead of its
    # label. The official trainer has none (0.0); 0.1 keeps an unconditional branch for
    # classifier-free guidance (`DecodeOptions.guidance_scale`), which needs one.
    class_dropout: float = 0.1
    # Dropout on the attention probabilities; None: the model's `dropout` (0.1, as the official
    # BERT). 0 lets the CPU train on its fused attention kernel: with dropout PyTorch runs the
    # unfused one, a 1026-token step of `video64` 3.2x slower (8.4 s against 2.6 s, batch 8).
    attention_dropout: float | None = None
    # Colour augmentation of half the cached clips (`training/augment.py`), 0-1; 0: off. With a
    # tokenizer trained under it, the transformer sees the tokens of other palettes too.
    colour_jitter: float = 0.0
    cache_clips: int = 4096
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bf16) | bf16 | fp32
    workers: int = 0  # processes that make clips for the token cache (0: in this process)
    resume: bool = True
    stop_at: int | None = None  # end this run early (time-limited jobs); resume goes on
