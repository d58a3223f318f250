"""The checkpoint in the repository: what `magvit serve`, `generate` and `eval` load by default."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.config import CONFIGS
from models.options import DecodeOptions
from models.pipeline import MagvitPipeline
from models.tasks import TASK_CODES
from training.datasets import make_dataset
from training.evaluate import evaluate

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "default"


def test_shipped_checkpoint_is_the_default_preset_in_half_precision():
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size < 30 * 2**20, f"{size / 2**20:.1f} MiB"
    ckpt = load_checkpoint(SHIPPED, require_transformer=True)
    assert ckpt.config == CONFIGS["default"]
    assert tuple(ckpt.config.tasks) == TASK_CODES
    states = (ckpt.tokenizer_state, ckpt.transformer_state)
    floats = [t for s in states for t in s.values() if t.is_floating_point()]
    assert all(t.dtype == torch.float16 for t in floats)
    doc = json.loads((SHIPPED / "config.json").read_text())
    assert doc["metadata"]["kind"] == "magvit" and doc["metadata"]["transformer_steps"] > 0


def test_shipped_checkpoint_generates():
    pipe = MagvitPipeline.from_checkpoint(None)  # the default: the shipped one
    t, h, w = pipe.config.video_shape
    video = torch.zeros(1, 3, t, h, w)
    video[:, :, :, 8:16, 8:16] = 1.0
    out = pipe.generate("fp", video, [0], [0], DecodeOptions(steps=2))
    assert out.shape == (1, 3, t, h, w) and torch.isfinite(out).all()
    # Frame prediction keeps the frames it was given (up to the tokenizer's reconstruction).
    assert (out[:, :, :5] - video[:, :, :5]).abs().mean() < 0.1


def test_shipped_checkpoint_keeps_its_figures():
    """The shipped checkpoint on the 32 held-out clips of docs/training.md: its tokenizer's PSNR
    (26.18 dB there) stays at 26 dB or above, and frame prediction from 5 frames within 0.8 x the
    error of copying the last frame."""
    pipe = MagvitPipeline.from_checkpoint(None)
    clips = make_dataset("synthetic", pipe.config, "eval", num_clips=32)
    report = evaluate(pipe, clips, 32, tasks=["fp"])
    assert report["tokenizer"]["psnr"] >= 26.0, report
    assert report["fp"]["mse"] <= 0.8 * report["fp"]["copy_last_frame_mse"], report
