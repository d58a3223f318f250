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
from tests.support.camera import camera_windows
from training.evaluate import evaluate

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "default"
# Its figures on the committed camera clip's three windows, in fp32: the tokenizer's PSNR
# (measured 20.74 dB; no sampling in it, so the margin is for other CPUs' arithmetic only) and
# frame prediction's error over copying the last frame's (measured 1.89, 1.96 and 1.92 for
# seeds 0, 1 and 2: a talking head in a parked car, where copying is nearly perfect).
MIN_PSNR = 20.5
MAX_FP = 2.2


def test_shipped_checkpoint_is_the_64x64_preset_in_half_precision_trained_on_the_film():
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size < 30 * 2**20, f"{size / 2**20:.1f} MiB"
    ckpt = load_checkpoint(SHIPPED, require_transformer=True)
    preset = CONFIGS["video64"]
    assert ckpt.config.name == preset.name and ckpt.config.video_shape == preset.video_shape
    assert ckpt.config.tokenizer == preset.tokenizer
    assert ckpt.config.transformer == preset.transformer
    # What the film taught it: motion at 12 frames per second, its eight scene classes by name.
    assert ckpt.config.frame_rate == 12.0 and len(ckpt.config.class_names) == 8
    assert tuple(ckpt.config.tasks) == TASK_CODES
    states = (ckpt.tokenizer_state, ckpt.transformer_state)
    floats = [t for s in states for t in s.values() if t.is_floating_point()]
    assert all(t.dtype == torch.float16 for t in floats)
    doc = json.loads((SHIPPED / "config.json").read_text())
    meta = doc["metadata"]
    assert meta["kind"] == "magvit" and meta["transformer_steps"] > 0
    # Every part trained on the film (its training range; `magvit data fetch bbb`).
    assert meta["data"] == meta["tokenizer"]["data"] == meta["decoder"]["data"] == "data/bbb"


def test_shipped_checkpoint_generates():
    pipe = MagvitPipeline.from_checkpoint(None)  # the default: the shipped one
    t, h, w = pipe.config.video_shape
    video = torch.zeros(1, 3, t, h, w)
    video[:, :, :, 16:32, 16:32] = 1.0
    out = pipe.generate("fp", video, [0], [0], DecodeOptions(steps=2))
    assert out.shape == (1, 3, t, h, w) and torch.isfinite(out).all()
    # Frame prediction keeps the frames it was given (up to the tokenizer's reconstruction).
    assert (out[:, :, :5] - video[:, :, :5]).abs().mean() < 0.1


def test_shipped_checkpoint_keeps_its_figures(tmp_path: Path):
    """The shipped checkpoint on the three windows of the committed camera clip (never trained
    on; `tests/data/camera/`), in fp32: its tokenizer's PSNR and frame prediction from 5
    frames against copying the last frame stay where they were measured (MIN_PSNR, MAX_FP)."""
    pipe = MagvitPipeline.from_checkpoint(None, "cpu", torch.float32)
    clips = camera_windows(pipe.config, tmp_path)
    report = evaluate(pipe, clips, len(clips), tasks=["fp"])
    assert report["tokenizer"]["psnr"] >= MIN_PSNR, report
    assert report["fp"]["mse"] <= MAX_FP * report["fp"]["copy_last_frame_mse"], report
