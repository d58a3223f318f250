"""Test videos made on the fly: good clips in every container and a corpus of bad input."""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction

import av
import numpy as np

from media import encode_video


def moving_bar(frames: int = 10, height: int = 32, width: int = 32) -> np.ndarray:
    """uint8 [T, H, W, 3]: a white bar moving right on black."""
    video = np.zeros((frames, height, width, 3), np.uint8)
    for i in range(frames):
        left = (i * 2) % max(width - 6, 1)
        video[i, :, left : left + 6] = 255
    return video


def encode_with(frames: np.ndarray, container: str, codec: str, fps: float = 8) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p" if codec != "gif" else "rgb8"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def clip(fmt: str = "mp4", frames: int = 10, size: int = 32) -> bytes:
    """A small clip in mp4, webm, gif, avi, mov or mkv."""
    video = moving_bar(frames, size, size)
    if fmt in ("mp4", "webm", "gif"):
        return encode_video(video, fmt)
    container, codec = {
        "avi": ("avi", "mpeg4"),
        "mov": ("mov", "mpeg4"),
        "mkv": ("matroska", "libx264"),
    }[fmt]
    return encode_with(video, container, codec)


def png_image(size: int = 16) -> bytes:
    """A valid PNG (a still image), written by hand to need no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80" * (size * 3) for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def audio_only(seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        samples = np.zeros((1, int(8000 * seconds)), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def huge_resolution(width: int = 7680, height: int = 4320) -> bytes:
    """An 8K clip of two solid frames: tiny on disk, huge when decoded."""
    frames = np.zeros((2, height, width, 3), np.uint8)
    return encode_with(frames, "mp4", "libx264")


def long_clip(seconds: int = 180, fps: float = 0.5) -> bytes:
    """Three minutes at one frame every two seconds."""
    return encode_with(moving_bar(int(seconds * fps) + 1, 16, 16), "mp4", "libx264", fps)


def truncated(fmt: str = "mp4") -> bytes:
    data = clip(fmt, frames=12)
    return data[: len(data) // 3]
