"""Decoding user video with PyAV, under limits checked before and during decoding.

Frames come out as uint8 [T, H, W, 3] (RGB). Limits protect a server from hostile input: the byte
size is checked first, the declared resolution and duration from the container header before any
frame is decoded, and the frame count and wall time while decoding. Only the frames asked for are
decoded, so a long clip costs no more than a short one.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from media.errors import DecodeTimeout, NotAVideo, VideoTooLarge

# Demuxers that read still images: a PNG or JPEG renamed .mp4 is not a video.
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe")


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 3840 * 2160  # per frame, from the header
    max_frames: int = 1024  # frames decoded at most (the model needs the first few)
    max_seconds: float = 120.0  # declared duration
    timeout_s: float = 20.0  # wall time for the whole decode


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float
    width: int
    height: int
    duration_s: float | None


def _open_source(source: bytes | str | Path | BinaryIO, limits: DecodeLimits):
    if isinstance(source, bytes | bytearray | memoryview):
        size = len(source)
        handle: BinaryIO | str = io.BytesIO(bytes(source))
    elif isinstance(source, str | Path):
        size = Path(source).stat().st_size
        handle = str(source)
    else:
        pos = source.tell()
        size = source.seek(0, io.SEEK_END) - pos
        source.seek(pos)
        handle = source
    if size == 0:
        raise NotAVideo("the file is empty")
    if size > limits.max_bytes:
        raise VideoTooLarge(f"the file is {size} bytes; the limit is {limits.max_bytes}")
    return handle


def decode_video(
    source: bytes | str | Path | BinaryIO,
    limits: DecodeLimits = DecodeLimits(),
    max_frames: int | None = None,
) -> DecodedVideo:
    """Decode the first `max_frames` frames (default: the limit) of a video."""
    handle = _open_source(source, limits)
    want = min(max_frames or limits.max_frames, limits.max_frames)
    start = time.monotonic()
    try:
        container = av.open(handle, mode="r", timeout=limits.timeout_s)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise NotAVideo(f"not a decodable video ({type(err).__name__})") from None
    with container:
        if container.format.name in _IMAGE_FORMATS:
            raise NotAVideo("the file is a still image, not a video")
        if not container.streams.video:
            raise NotAVideo("the file has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_pixels:
            raise VideoTooLarge(
                f"{width}x{height} is {width * height} pixels per frame; "
                f"the limit is {limits.max_pixels}"
            )
        duration = _duration(container, stream)
        if duration is not None and duration > limits.max_seconds:
            raise VideoTooLarge(
                f"the video lasts {duration:.1f} s; the limit is {limits.max_seconds} s"
            )
        stream.thread_type = "AUTO"
        frames: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                if time.monotonic() - start > limits.timeout_s:
                    raise DecodeTimeout(f"decoding took longer than {limits.timeout_s} s")
                if frame.width * frame.height > limits.max_pixels:
                    raise VideoTooLarge("a frame is larger than the pixel limit")
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= want:
                    break
        except av.error.FFmpegError:
            if not frames:  # truncated or corrupt before the first frame
                raise NotAVideo("the video data is corrupt or truncated") from None
        if not frames:
            raise NotAVideo("no frame could be decoded")
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 8.0
    # Frames of one stream may change size mid-stream; keep the first size only.
    first = frames[0].shape
    frames = [f for f in frames if f.shape == first]
    return DecodedVideo(np.stack(frames), fps, first[1], first[0], duration)


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def read_video(
    path: str | Path, limits: DecodeLimits = DecodeLimits(), max_frames: int | None = None
) -> DecodedVideo:
    """Decode a video file; `.npz` files (a `video` uint8 [T, H, W, 3] array) are read without
    pickle."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        from media.npz import read_npz

        frames = read_npz(path.read_bytes())[: max_frames or limits.max_frames]
        return DecodedVideo(frames, 8.0, frames.shape[2], frames.shape[1], None)
    return decode_video(path, limits, max_frames)
