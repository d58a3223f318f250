"""Decoding user video with PyAV, under limits checked before and during decoding.

Frames come out as uint8 [T, H, W, 3] (RGB). Limits protect a server from hostile input: the byte
size is checked first, the declared resolution and duration from the container header before any
frame is decoded, and the frame count and wall time while decoding. Only the frames asked for are
kept: from the start of a clip (decoding stops there, so a long clip costs no more than a short
one), from a given frame on, or its last frames (every frame is decoded, at most the frame limit,
but only the last few are held in memory).
"""

from __future__ import annotations

import io
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from media.errors import DecodeTimeout, NotAVideo, VideoTooLarge

# The only demuxers a video is opened with, chosen from its first bytes. FFmpeg's probing would
# also pick demuxers that read other files (concat, hls, dash, image2 sequences, subtitles with
# references): never let the bytes choose.
ALLOWED_DEMUXERS = ("mov", "matroska", "gif", "avi")
_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def sniff_container(head: bytes) -> str:
    """The demuxer for a file starting with `head` (at least 12 bytes), from the allowlist; a
    NotAVideo for anything else."""
    if head[4:8] in _BOX_TYPES:
        return "mov"  # MP4, MOV, 3GP: ISO base media boxes
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # Matroska and WebM: EBML
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    raise NotAVideo("not a supported video container (mp4, mov, webm, mkv, gif or avi)")


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 3840 * 2160  # per frame, from the header
    max_frames: int = 1024  # frames decoded at most (the model needs the first few)
    max_seconds: float = 120.0  # declared duration
    timeout_s: float = 20.0  # wall time for the whole decode


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # uint8 [T, H, W, 3]; T may be 0 when asked to start past the end
    fps: float
    width: int
    height: int
    duration_s: float | None
    start: int = 0  # the index in the video of frames[0]
    length: int | None = None  # the video's frame count, when decoding reached its end


def _open_source(
    source: bytes | str | Path | BinaryIO, limits: DecodeLimits
) -> tuple[BinaryIO, str]:
    """A binary handle on the source and the demuxer its first bytes call for. Paths are read
    as plain files (never through FFmpeg's protocols)."""
    handle: BinaryIO
    if isinstance(source, bytes | bytearray | memoryview):
        handle = io.BytesIO(bytes(source))
    elif isinstance(source, str | Path):
        handle = open(source, "rb")  # noqa: SIM115 - closed by the caller
    else:
        handle = source
    pos = handle.tell()
    size = handle.seek(0, io.SEEK_END) - pos
    handle.seek(pos)
    if size == 0:
        raise NotAVideo("the file is empty")
    if size > limits.max_bytes:
        raise VideoTooLarge(f"the file is {size} bytes; the limit is {limits.max_bytes}")
    head = handle.read(16)
    handle.seek(pos)
    return handle, sniff_container(head)


def decode_video(
    source: bytes | str | Path | BinaryIO,
    limits: DecodeLimits = DecodeLimits(),
    max_frames: int | None = None,
    start: int | None = 0,
) -> DecodedVideo:
    """Decode `max_frames` frames (default: the limit) of a video from frame `start` on. With
    `start=None`, its last `max_frames` frames: every frame is decoded and only those are kept,
    and a video of more frames than the limit is refused (VideoTooLarge), since its last
    frames would be past it. A `start` past the end gives no frames (and the video's length)."""
    handle, demuxer = _open_source(source, limits)
    try:
        return _decode(handle, demuxer, limits, max_frames, start)
    finally:
        if handle is not source:
            handle.close()


def _decode(
    handle: BinaryIO,
    demuxer: str,
    limits: DecodeLimits,
    max_frames: int | None,
    start: int | None,
) -> DecodedVideo:
    want = min(max_frames or limits.max_frames, limits.max_frames)
    if start is not None and start + want > limits.max_frames:
        raise VideoTooLarge(f"frames past the first {limits.max_frames} are not decoded")
    begin = time.monotonic()
    try:
        container = av.open(handle, mode="r", format=demuxer, timeout=limits.timeout_s)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        raise NotAVideo("the video data is not decodable") from None
    with container:
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
        # The frames kept: a bounded deque, so reading to the end holds `want` frames at most.
        kept: deque[np.ndarray] = deque(maxlen=want)
        first = start or 0
        count = 0  # frames decoded
        ended = True
        try:
            for frame in container.decode(stream):
                if time.monotonic() - begin > limits.timeout_s:
                    raise DecodeTimeout(f"decoding took longer than {limits.timeout_s} s")
                if frame.width * frame.height > limits.max_pixels:
                    raise VideoTooLarge("a frame is larger than the pixel limit")
                if start is None and count >= limits.max_frames:
                    raise VideoTooLarge(
                        f"the video has more than {limits.max_frames} frames, the limit for "
                        "reading its last frames"
                    )
                count += 1
                if count > first:
                    kept.append(frame.to_ndarray(format="rgb24"))
                if start is not None and len(kept) >= want:
                    ended = False
                    break
        except av.error.FFmpegError:
            if not count:  # truncated or corrupt before the first frame
                raise NotAVideo("the video data is corrupt or truncated") from None
        if not count:
            raise NotAVideo("no frame could be decoded")
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 8.0
    length = count if ended else None
    if start is None:
        first = count - len(kept)
    if not kept:
        empty = np.zeros((0, height, width, 3), np.uint8)
        return DecodedVideo(empty, fps, width, height, duration, first, length)
    # Frames of one stream may change size mid-stream; keep the first size only.
    shape = kept[0].shape
    frames = np.stack([f for f in kept if f.shape == shape])
    return DecodedVideo(frames, fps, shape[1], shape[0], duration, first, length)


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def read_video(
    path: str | Path,
    limits: DecodeLimits = DecodeLimits(),
    max_frames: int | None = None,
    start: int | None = 0,
) -> DecodedVideo:
    """Decode a video file (`start` as `decode_video`); `.npz` files (a `video` uint8
    [T, H, W, 3] array) are read without pickle."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        from media.npz import read_npz

        video = read_npz(path.read_bytes())
        if start is None and len(video) > limits.max_frames:
            raise VideoTooLarge(
                f"the video has more than {limits.max_frames} frames, the limit for reading "
                "its last frames"
            )
        video = video[: limits.max_frames]
        want = min(max_frames or limits.max_frames, limits.max_frames)
        first = max(len(video) - want, 0) if start is None else start
        frames = video[first : first + want]
        h, w = video.shape[1:3]
        return DecodedVideo(frames, 8.0, w, h, None, first, len(video))
    return decode_video(path, limits, max_frames, start)
