"""The playground's bundled sample clips (`service/static/samples/`), from held-out real footage.

Each sample is one 16-frame evaluation window at 64x64, cut exactly as `magvit eval` cuts it
(centre crop, the folder's frame stride), from footage the shipped model never trained on: the
film's held-out range and the camera clips, which are for evaluation only.

    .venv/bin/magvit data fetch bbb --out data/bbb
    .venv/bin/magvit data fetch camera --out data/camera
    .venv/bin/python docs/samples.py [--bbb data/bbb] [--camera data/camera]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from media.encode import encode_video, playable_fps
from models.config import get_config
from training.data.videos import VideoWindows

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "service" / "static" / "samples"


@dataclass(frozen=True)
class Sample:
    file: str
    name: str
    source: str  # "bbb" or "camera": which data folder
    window: int  # index among the folder's evaluation windows


SAMPLES = (
    Sample("carphone.webm", "a man talking in a car (camera)", "camera", 0),
    Sample("bikes.webm", "a street, a cyclist passing (camera)", "camera", 4),
    Sample("bunny.webm", "a rabbit and a butterfly (Big Buck Bunny, CC-BY)", "bbb", 69),
    Sample("apple.webm", "an apple falling (Big Buck Bunny, CC-BY)", "bbb", 32),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bbb", type=Path, default=ROOT / "data" / "bbb")
    parser.add_argument("--camera", type=Path, default=ROOT / "data" / "camera")
    parser.add_argument("--config", default="video64")
    args = parser.parse_args()
    config = get_config(args.config)
    folders = {"bbb": args.bbb, "camera": args.camera}
    windows = {
        name: VideoWindows(folder, config, "eval", show_progress=False)
        for name, folder in folders.items()
    }
    for old in OUT.glob("*.webm"):
        old.unlink()
    for sample in SAMPLES:
        clips = windows[sample.source]
        video = clips.window(sample.window)[0].video
        fps = clips.fps[video] / clips.frame_stride
        data = encode_video(clips.frames(sample.window), "webm", playable_fps(fps))
        (OUT / sample.file).write_bytes(data)
        print(f"{sample.file}: {len(data)} bytes at {fps:.2f} fps")
    index = [{"file": s.file, "name": s.name} for s in SAMPLES]
    (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
