"""Encoding generated frames (uint8 [T, H, W, 3]) as mp4, webm, gif or npz."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from media.npz import write_npz

# Output format -> (container, codec, pixel format, MIME type).
_CODECS = {
    "mp4": ("mp4", "libx264", "yuv420p", "video/mp4"),
    "webm": ("webm", "libvpx-vp9", "yuv420p", "video/webm"),
    "gif": ("gif", "gif", "rgb8", "image/gif"),
}
FORMATS: dict[str, str] = {fmt: spec[3] for fmt, spec in _CODECS.items()}
FORMATS["npz"] = "application/x-npz"
# The frame rates videos are written at. A rate from a container's header (hostile or broken) is
# brought inside by `playable_fps`; GIF goes no faster (its delays are hundredths of a second).
MIN_FPS, MAX_FPS = 0.5, 60.0
# Frames up to this many pixels are coded on one thread: a codec's thread pool costs more to
# start than it saves on them, and a server codes many such videos at once.
SMALL_FRAME_PIXELS = 320 * 240


def playable_fps(fps: float) -> float:
    """`fps` within [MIN_FPS, MAX_FPS]."""
    return min(max(fps, MIN_FPS), MAX_FPS)


def encode_video(frames: np.ndarray, fmt: str = "mp4", fps: float = 8) -> bytes:
    """The frames as a video of format `fmt`, played at `fps` frames per second, any rate in
    [MIN_FPS, MAX_FPS] (14.985, a 29.97 fps clip read at a step of 2, is kept as 15000/1001)."""
    if not MIN_FPS <= fps <= MAX_FPS:
        raise ValueError(f"fps must be in [{MIN_FPS:g}, {MAX_FPS:g}], not {fps}")
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got {frames.shape}")
    if fmt == "npz":
        return write_npz(frames)
    if fmt not in _CODECS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    container_fmt, codec, pix_fmt, _ = _CODECS[fmt]
    if pix_fmt == "yuv420p" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        # 4:2:0 chroma needs even sizes: repeat the last row / column.
        pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
        frames = np.pad(frames, pad, mode="edge")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_fmt) as out:
        stream = out.add_stream(codec, rate=_rate(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        small = frames.shape[1] * frames.shape[2] <= SMALL_FRAME_PIXELS
        threads = {"threads": "1"} if small else {}
        if codec == "libx264":
            # On small frames the fastest preset halves the time at the same quality setting;
            # the file grows, by a few kB.
            preset = "ultrafast" if small else "veryfast"
            stream.options = {"crf": "18", "preset": preset} | threads
        elif codec == "libvpx-vp9":
            options = {"crf": "30", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
            stream.options = options | threads
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def _rate(fps: float) -> Fraction:
    """`fps` as a fraction of a small denominator (NTSC rates are n / 1001)."""
    return Fraction(fps).limit_denominator(1001)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8) -> Path:
    """Write frames to `path`, the format chosen by its extension."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    data = encode_video(frames, fmt, fps)
    path.write_bytes(data)
    return path
