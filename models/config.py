"""Typed model configurations and the one registry of named presets.

Every size in this file comes from ../shared/MAGVIT.md (the paper and the official configs) unless
a comment says otherwise. A `ModelConfig` is everything needed to build a tokenizer and a
transformer, and it is what a checkpoint's JSON stores.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from models.tasks import TASK_CODES

# Frames per second a generated video plays at when its model's frame_rate is unknown.
DEFAULT_FRAME_RATE = 8.0


@dataclass(frozen=True)
class TokenizerConfig:
    """3D-VQ tokenizer (spec section 2)."""

    filters: int
    channel_multipliers: tuple[int, ...]
    num_res_blocks: int
    # One entry per downsampling step (len(channel_multipliers) - 1): True = T, H and W halve
    # (3D average pooling), False = only H and W (2D). "3D downsampling in the shallow layers".
    temporal_downsample: tuple[bool, ...]
    embedding_dim: int
    codebook_size: int
    num_groups: int = 32
    # The paper replaces zero padding by reflect padding for token consistency across positions.
    padding: str = "reflect"  # "reflect" | "zeros"
    # 3 for the video tokenizer, 2 for the image variant whose weights inflate into it.
    conv_dim: int = 3
    norm_eps: float = 1e-6  # Flax GroupNorm default, pinned by the reference outputs
    commitment_cost: float = 0.25
    entropy_loss_ratio: float = 0.1
    entropy_temperature: float = 0.01

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)

    @property
    def temporal_factor(self) -> int:
        if self.conv_dim == 2:
            return 1
        return 2 ** sum(self.temporal_downsample)


@dataclass(frozen=True)
class TransformerConfig:
    """Post-LN BERT (spec section 4)."""

    hidden_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    # False: the model has no task input, as a single-task model of the official code (whose
    # sequence is [class] [video tokens]); the task slot of the sequence is dropped before the
    # embeddings, so its position table has one row fewer (`ModelConfig.num_positions`).
    task_token: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """A whole MAGVIT model: video geometry, tokenizer, transformer and conditioning."""

    name: str
    num_frames: int
    frame_size: tuple[int, int]  # (H, W)
    tokenizer: TokenizerConfig
    transformer: TransformerConfig
    num_classes: int
    # Frame prediction conditions on this many pixel frames (1 for BAIR, 5 for Kinetics-600).
    cond_frames: int = 1
    tasks: tuple[str, ...] = TASK_CODES
    # What each class id means to a user (from the training data); () when unnamed.
    class_names: tuple[str, ...] = ()
    # Frames of the source footage between two frames of a training clip (24 fps film, 2: a clip
    # runs at 12 fps); recorded so users know at what frame rate the model expects motion.
    frame_stride: int = 1
    # Frames per second of a training clip (the footage's rate / frame_stride: 12 for that film),
    # the rate at which the model learnt motion; None when unknown (synthetic data). The service
    # and the CLI sample a user's video at about this rate and play results back at it.
    frame_rate: float | None = None

    def __post_init__(self) -> None:
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.frame_rate is not None and not self.frame_rate > 0:
            raise ValueError(f"frame_rate must be positive, not {self.frame_rate}")

    @property
    def playback_rate(self) -> float:
        """Frames per second a video generated from no input plays at: the model's rate, or
        DEFAULT_FRAME_RATE when it is unknown."""
        return self.frame_rate or DEFAULT_FRAME_RATE

    def class_name(self, class_id: int) -> str:
        return self.class_names[class_id] if self.class_names else f"class {class_id}"

    @property
    def video_shape(self) -> tuple[int, int, int]:
        return (self.num_frames, *self.frame_size)

    @property
    def token_shape(self) -> tuple[int, int, int]:
        t, h, w = self.video_shape
        tk = self.tokenizer
        return (t // tk.temporal_factor, h // tk.spatial_factor, w // tk.spatial_factor)

    @property
    def num_video_tokens(self) -> int:
        return math.prod(self.token_shape)

    @property
    def cond_latent_frames(self) -> int:
        """Latent frames that hold the FP condition: ceil(cond_frames / temporal factor)."""
        return -(-self.cond_frames // self.tokenizer.temporal_factor)

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.tokenizer.codebook_size, self.num_classes, len(TASK_CODES))

    @property
    def sequence_length(self) -> int:
        """[task token] [class token] [video tokens]."""
        return 2 + self.num_video_tokens

    @property
    def num_positions(self) -> int:
        """Rows of the transformer's position table: the positions it reads."""
        return self.sequence_length - (0 if self.transformer.task_token else 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict` (JSON turns tuples into lists); unknown fields are an error."""
        data = dict(data)
        try:
            tok = dict(data.pop("tokenizer"))
            tr = dict(data.pop("transformer"))
            for key in ("channel_multipliers", "temporal_downsample"):
                tok[key] = tuple(tok[key])
            data["frame_size"] = tuple(data["frame_size"])
            for key in ("tasks", "class_names"):
                if key in data:
                    data[key] = tuple(data[key])
            return cls(
                tokenizer=TokenizerConfig(**tok), transformer=TransformerConfig(**tr), **data
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"invalid model config: {err}") from None


@dataclass(frozen=True)
class Vocabulary:
    """Token id layout of the transformer's input and output vocabulary.

    [0, K)                       codebook tokens (the only ones ever sampled)
    K                            [MASK]
    K+1 .. K+num_tasks           one task token per task, in TASK_CODES order
    then num_classes class tokens, then one "unconditional" class token
    """

    codebook_size: int
    num_classes: int
    num_tasks: int
    mask_id: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask_id", self.codebook_size)

    def task_token(self, task_index: int) -> int:
        if not 0 <= task_index < self.num_tasks:
            raise ValueError(f"task index {task_index} out of range")
        return self.codebook_size + 1 + task_index

    def class_token(self, class_id: int | None) -> int:
        base = self.codebook_size + 1 + self.num_tasks
        if class_id is None:
            return base + self.num_classes
        if not 0 <= class_id < self.num_classes:
            raise ValueError(f"class id {class_id} out of range [0, {self.num_classes})")
        return base + class_id

    @property
    def size(self) -> int:
        return self.codebook_size + 1 + self.num_tasks + self.num_classes + 1


_B_TOKENIZER = TokenizerConfig(
    filters=64,
    channel_multipliers=(1, 2, 2, 4),
    num_res_blocks=2,
    temporal_downsample=(True, True, False),
    embedding_dim=256,
    codebook_size=1024,
)

_TINY = ModelConfig(
    name="tiny",
    num_frames=8,
    frame_size=(16, 16),
    tokenizer=TokenizerConfig(
        filters=8,
        channel_multipliers=(1, 2, 2),
        num_res_blocks=1,
        temporal_downsample=(True, False),
        embedding_dim=8,
        codebook_size=32,
        num_groups=4,
    ),
    transformer=TransformerConfig(hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64),
    num_classes=10,  # as many as the synthetic dataset has
    cond_frames=1,
)
_TINY_2D = dataclasses.replace(
    _TINY, name="tiny-2d", num_frames=1, tokenizer=dataclasses.replace(_TINY.tokenizer, conv_dim=2)
)

_VIDEO64 = ModelConfig(
    name="video64",
    num_frames=16,
    frame_size=(64, 64),
    tokenizer=TokenizerConfig(
        filters=32,
        channel_multipliers=(1, 2, 4),
        num_res_blocks=1,
        temporal_downsample=(True, True),
        embedding_dim=32,
        codebook_size=1024,
        num_groups=8,
    ),
    transformer=TransformerConfig(hidden_dim=256, num_layers=6, num_heads=4, mlp_dim=1024),
    num_classes=8,  # scene classes of the training film (training/data/bbb.json)
    cond_frames=5,
    frame_stride=2,
)

CONFIGS: dict[str, ModelConfig] = {
    # Seconds on a CPU: for tests only.
    "tiny": _TINY,
    # The tiny preset's image tokenizer (tests of 2D training and inflation).
    "tiny-2d": _TINY_2D,
    # The shipped model: 16 x 32 x 32 -> 4 x 8 x 8 tokens (4x spatial, 4x temporal compression),
    # trained on CPU on synthetic sprites, sized so that a 12-step generation takes a few seconds
    # on two CPU cores.
    "default": ModelConfig(
        name="default",
        num_frames=16,
        frame_size=(32, 32),
        # Two levels of downsampling, 32 filters at full resolution.
        # A 1024-entry codebook as in the paper.
        tokenizer=TokenizerConfig(
            filters=32,
            channel_multipliers=(1, 2, 4),
            num_res_blocks=1,
            temporal_downsample=(True, True),
            embedding_dim=32,
            codebook_size=1024,
            num_groups=8,
        ),
        transformer=TransformerConfig(hidden_dim=256, num_layers=4, num_heads=4, mlp_dim=1024),
        num_classes=10,
        cond_frames=5,
    ),
    # Real footage at 64 x 64: 16 x 64 x 64 -> 4 x 16 x 16 tokens, the official BAIR geometry
    # (channel multipliers (1, 2, 4): 4x spatial, 4x temporal). Sized for this project's CPU
    # training and CPU serving; cost per training step in docs/training.md.
    "video64": _VIDEO64,
    # Its image tokenizer: the same widths in 2D, trained on single frames and inflated into
    # the 3D one (`magvit train tokenizer --config video64 --init-2d DIR`).
    "video64-2d": dataclasses.replace(
        _VIDEO64,
        name="video64-2d",
        num_frames=1,
        tokenizer=dataclasses.replace(_VIDEO64.tokenizer, conv_dim=2),
    ),
    # The paper's models: 16 x 128 x 128 -> 4 x 16 x 16 tokens, UCF-101 classes.
    "magvit-b": ModelConfig(
        name="magvit-b",
        num_frames=16,
        frame_size=(128, 128),
        tokenizer=_B_TOKENIZER,
        transformer=TransformerConfig(hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072),
        num_classes=101,
        cond_frames=5,
    ),
    "magvit-l": ModelConfig(
        name="magvit-l",
        num_frames=16,
        frame_size=(128, 128),
        tokenizer=dataclasses.replace(_B_TOKENIZER, filters=128),
        transformer=TransformerConfig(hidden_dim=1024, num_layers=24, num_heads=16, mlp_dim=4096),
        num_classes=101,
        cond_frames=5,
    ),
}


def get_config(name: str) -> ModelConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}") from None
