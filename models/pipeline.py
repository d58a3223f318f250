"""Task + video (+ class) -> generated video: the one object the CLI and the server use.

Shapes: B batch, C = 3 channels, T frames, H, W pixels; t, h, w tokens; N = t * h * w.
Videos are float [B, C, T, H, W] in [0, 1]; user frames are uint8 [T, H, W, C].
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.checkpoint import (
    Checkpoint,
    CheckpointError,
    default_checkpoint_dir,
    load_checkpoint,
)
from models.config import ModelConfig, get_config
from models.decoding import DecodeOptions, ProgressFn, StepInfo, decode
from models.tasks import TASK_CODES, Task, get_task
from models.tokenizer import VQTokenizer
from models.transformer import BidirectionalTransformer

__all__ = ["DecodeOptions", "InvalidInput", "MagvitPipeline", "StepInfo", "window_count"]


class InvalidInput(ValueError):
    """A request that cannot be served as asked: unknown task, too few frames, bad class id."""


def build_tokenizer(config: ModelConfig) -> VQTokenizer:
    return VQTokenizer(config.tokenizer)


def load_tokenizer(ckpt: Checkpoint) -> VQTokenizer:
    """The tokenizer of a checkpoint already read, in fp32 whatever precision it is stored in."""
    tokenizer = build_tokenizer(ckpt.config)
    tokenizer.load_state_dict({k: v.float() for k, v in ckpt.tokenizer_state.items()})
    return tokenizer


def build_transformer(config: ModelConfig) -> BidirectionalTransformer:
    return BidirectionalTransformer(
        config.transformer, vocab_size=config.vocab.size, max_positions=config.num_positions
    )


def window_count(config: ModelConfig, frames: int) -> int:
    """Windows of the model that make a video of `frames` frames: the first gives `num_frames`,
    each next one, conditioned on the last `cond_frames`, `num_frames - cond_frames` more."""
    t, c = config.num_frames, config.cond_frames
    if frames <= t:
        return 1
    if t <= c:
        raise InvalidInput(f"a window of {t} frames conditioned on {c} cannot slide")
    return 1 + -(-(frames - t) // (t - c))


def window_seed(seed: int, window: int) -> int:
    """The seed of a request's `window`-th window (window 0 keeps the request's seed)."""
    if window == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{window}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX-512 BF16 or AMX), so that
    oneDNN runs bf16 convolutions and matmuls faster than fp32 rather than emulating them."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        )
    except (AttributeError, RuntimeError):  # a build without oneDNN or without these probes
        return False


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA; bf16 on a CPU that has it natively (measured: `docs/performance.md`);
    fp32 elsewhere. Code search and the sampling step stay in fp32 in every case."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def tokenizer_memory_format(
    config: ModelConfig, device: torch.device, dtype: torch.dtype
) -> torch.memory_format:
    """channels-last-3d (NDHWC) for a 3D tokenizer in reduced precision on the CPU, where
    oneDNN's bf16 3D convolutions run about 1.6x faster in it (`docs/performance.md`); the
    default layout elsewhere, so that fp32 stays plain fp32 eager."""
    if device.type == "cpu" and dtype != torch.float32 and config.tokenizer.conv_dim == 3:
        return torch.channels_last_3d
    return torch.contiguous_format


def precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto` (see `default_dtype`) or one of `PRECISIONS`."""
    if precision == "auto":
        return default_dtype(device)
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"precision must be auto or one of {sorted(PRECISIONS)}") from None


def fit_clip(frames: np.ndarray | torch.Tensor, video_shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] -> float [3, T', H', W'] in [0, 1] for `video_shape`: the first
    T' frames (the last one repeated if there are fewer), the shorter side resized and the rest
    centre-cropped."""
    t_model, h_model, w_model = video_shape
    frames = torch.as_tensor(np.asarray(frames))
    clip = frames[:t_model].permute(0, 3, 1, 2).float() / 255.0  # [T, C, H, W]
    _, _, h, w = clip.shape
    scale = max(h_model / h, w_model / w)
    size = (max(h_model, round(h * scale)), max(w_model, round(w * scale)))
    clip = F.interpolate(clip, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - h_model) // 2, (size[1] - w_model) // 2
    clip = clip[:, :, top : top + h_model, left : left + w_model]
    if clip.shape[0] < t_model:
        clip = torch.cat([clip, clip[-1:].expand(t_model - clip.shape[0], -1, -1, -1)])
    return clip.permute(1, 0, 2, 3).clamp(0, 1).contiguous()  # [C, T, H, W]


class MagvitPipeline:
    def __init__(
        self,
        config: ModelConfig,
        tokenizer: VQTokenizer,
        transformer: BidirectionalTransformer,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        self.config = config
        self.device = resolve_device(device)
        self.dtype = dtype if dtype is not None else default_dtype(self.device)
        self.memory_format = tokenizer_memory_format(config, self.device, self.dtype)
        self.tokenizer = tokenizer.to(self.device, self.dtype)
        self.tokenizer = self.tokenizer.to(memory_format=self.memory_format).eval()
        self.transformer = transformer.to(self.device, self.dtype).eval()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | None = None, device: str | torch.device = "cpu", dtype=None
    ) -> MagvitPipeline:
        ckpt = load_checkpoint(path or default_checkpoint_dir(), require_transformer=True)
        return cls.from_loaded(ckpt, device, dtype)

    @classmethod
    def from_loaded(
        cls, ckpt: Checkpoint, device: str | torch.device = "cpu", dtype=None
    ) -> MagvitPipeline:
        """A pipeline of a complete checkpoint already read (`load_checkpoint`)."""
        if ckpt.transformer_state is None:
            raise CheckpointError("a pipeline needs a checkpoint with a transformer")
        tokenizer = load_tokenizer(ckpt)
        transformer = build_transformer(ckpt.config)
        transformer.load_state_dict({k: v.float() for k, v in ckpt.transformer_state.items()})
        return cls(ckpt.config, tokenizer, transformer, device, dtype)

    @classmethod
    def random_init(
        cls,
        config: str | ModelConfig,
        device: str | torch.device = "cpu",
        seed: int = 0,
        dtype: torch.dtype | None = None,
    ) -> MagvitPipeline:
        config = get_config(config) if isinstance(config, str) else config
        torch.manual_seed(seed)
        return cls(config, build_tokenizer(config), build_transformer(config), device, dtype)

    def compile(self) -> MagvitPipeline:
        """Put the transformer under `torch.compile` (dynamic batch size; on the CPU with
        inductor's weight freezing, which prepacks the weights for oneDNN). Compilation happens
        at the first call of each kind of shape (batch 1, then any other batch): tens of
        seconds on a CPU, so for servers, not one-off generations. Measured gains:
        `docs/performance.md`. Weights must not change afterwards."""
        options = {"freezing": True} if self.device.type == "cpu" else {}
        self.transformer = torch.compile(self.transformer, dynamic=True, options=options)
        return self

    # ----------------------------------------------------------------------------------- inputs
    def task(self, task: Task | str) -> Task:
        """A task (or its code, resolved here) that this model was trained for."""
        if isinstance(task, str):
            try:
                task = get_task(task)
            except KeyError as err:
                raise InvalidInput(str(err.args[0])) from None
        if task.code not in self.config.tasks:
            raise InvalidInput(f"this model was not trained for task {task.code!r}")
        return task

    def required_frames(self, task: Task | str) -> int:
        return self.task(task).num_input_frames(self.config.num_frames, self.config.cond_frames)

    def prepare_video(self, frames: np.ndarray | torch.Tensor, task: Task | str) -> torch.Tensor:
        """User frames uint8 [T, H, W, 3] -> the model's clip [3, T, H, W] in [0, 1]: the first
        frames given (callers choose them: frame prediction is given the frames it conditions
        on, by default a clip's last), the shorter side resized to the model's and the rest
        centre-cropped. A clip that is shorter than the model but long enough for the task is
        padded with its last frame."""
        frames = torch.as_tensor(np.asarray(frames))
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InvalidInput(f"expected frames [T, H, W, 3], got {tuple(frames.shape)}")
        task = self.task(task)
        needed = self.required_frames(task)
        if frames.shape[0] < max(needed, 1):
            raise InvalidInput(
                f"task {task.code!r} needs at least {max(needed, 1)} frames; the video has "
                f"{frames.shape[0]}"
            )
        return fit_clip(frames, self.config.video_shape)

    def _class_ids(self, task: Task, class_ids, batch: int) -> list[int | None]:
        class_ids = list(class_ids) if class_ids is not None else [None] * batch
        if len(class_ids) != batch:
            raise InvalidInput("need one class id per video")
        for c in class_ids:
            if task.needs_class and c is None:
                raise InvalidInput(f"task {task.code!r} needs a class id")
            if c is not None and not 0 <= int(c) < self.config.num_classes:
                raise InvalidInput(f"class id {c} out of range [0, {self.config.num_classes - 1}]")
        return [int(c) if (c is not None and task.needs_class) else None for c in class_ids]

    # ------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        task: Task | str,
        videos: torch.Tensor | None,
        class_ids: Sequence[int | None] | None,
        seeds: Sequence[int],
        options: DecodeOptions = DecodeOptions(),
        progress: ProgressFn | None = None,
        paste_condition: bool = True,
    ) -> torch.Tensor:
        """Run a task on a batch; returns videos [B, 3, T, H, W] in [0, 1] (float32, on CPU)."""
        task = self.task(task)
        cfg = self.config
        batch = len(seeds)
        t, h, w = cfg.video_shape
        if videos is None:
            if task.needs_video:
                raise InvalidInput(f"task {task.code!r} needs a video")
            videos = torch.zeros(batch, 3, t, h, w)
        if tuple(videos.shape) != (batch, 3, t, h, w):
            raise InvalidInput(f"expected videos of shape {(batch, 3, t, h, w)}")
        classes = self._class_ids(task, class_ids, batch)
        videos = videos.float().cpu()  # kept exact for pasting the condition back

        cond_tokens = self.encode(task.condition_video(videos, cfg.cond_frames)).flatten(1)
        lt, lh, lw = cfg.token_shape
        cond_mask = task.token_mask(lt, lh, lw, cfg.cond_latent_frames).flatten()  # [N]
        tokens = decode(
            self.transformer,
            cfg.vocab,
            task.index,
            classes,
            cond_tokens,
            cond_mask[None].expand(batch, -1).to(self.device),
            seeds,
            options,
            progress,
            unconditional_task=TASK_CODES.index("cg") if "cg" in cfg.tasks else None,
        )
        out = self.decode_tokens(tokens.view(batch, lt, lh, lw))
        if paste_condition and task.needs_video:
            pixel_mask = task.pixel_mask(t, h, w, cfg.cond_frames).to(out.device)  # [T, H, W]
            out = torch.where(pixel_mask, videos, out)
        return out

    @torch.no_grad()
    def generate_frames(
        self,
        task: Task | str,
        videos: torch.Tensor | None,
        class_ids: Sequence[int | None] | None,
        seeds: Sequence[int],
        options: DecodeOptions = DecodeOptions(),
        frames: int | None = None,
        progress: ProgressFn | None = None,
        paste_condition: bool = True,
    ) -> torch.Tensor:
        """`generate` for a video of `frames` frames (None: the model's window), by sliding the
        window: each next window is conditioned on the last `cond_frames` frames generated so
        far. Frame-prediction tasks only (fp, cfp). Returns [B, 3, frames, H, W]; `progress`
        counts the steps of every window (num_steps = windows * steps)."""
        cfg = self.config
        if frames is None:
            return self.generate(task, videos, class_ids, seeds, options, progress, paste_condition)
        task = self.task(task)
        if not task.conditions_on_frames:
            raise InvalidInput(f"task {task.code!r} makes one window; frames is for fp and cfp")
        t, c = cfg.num_frames, cfg.cond_frames
        if frames <= c:
            raise InvalidInput(f"frames must be more than the {c} condition frames")
        windows = window_count(cfg, frames)
        total = windows * options.steps

        def counted(window: int) -> ProgressFn | None:
            if progress is None:
                return None
            done = window * options.steps
            return lambda info: progress(
                dataclasses.replace(info, step=done + info.step, num_steps=total)
            )

        out = self.generate(
            task, videos, class_ids, seeds, options, counted(0), paste_condition
        )  # [B, 3, T, H, W]
        pieces = [out]
        for window in range(1, windows):
            cond = out[:, :, -c:]  # the last frames generated so far
            video = torch.cat([cond, cond[:, :, -1:].expand(-1, -1, t - c, -1, -1)], 2)
            window_seeds = [window_seed(int(s), window) for s in seeds]
            out = self.generate(task, video, class_ids, window_seeds, options, counted(window))
            pieces.append(out[:, :, c:])
        return torch.cat(pieces, 2)[:, :, :frames]

    @torch.no_grad()
    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        """Videos [B, 3, T, H, W] in [0, 1] -> token ids [B, t, h, w], in the pipeline's
        precision and layout."""
        videos = videos.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
        return self.tokenizer.encode(videos)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [B, t, h, w] -> videos [B, 3, T, H, W] in [0, 1]; ids outside the codebook
        (still-masked positions during decoding) are shown as code 0."""
        k = self.config.tokenizer.codebook_size
        tokens = torch.where(tokens < k, tokens, torch.zeros_like(tokens)).to(self.device)
        return self.tokenizer.decode(tokens).float().clamp(0, 1).cpu()

    @staticmethod
    def video_to_uint8(video: torch.Tensor) -> np.ndarray:
        """[B, 3, T, H, W] in [0, 1] -> uint8 [B, T, H, W, 3]."""
        return (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
