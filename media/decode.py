"""Decoding user video with PyAV, under limits checked before and during decoding.

Frames come out as uint8 [T, H, W, 3] (RGB). Limits protect a server from hostile input: the byte
size is checked first, the declared resolution and duration from the container header before any
frame is decoded, and the frame count and wall time while decoding. Only the frames asked for are
kept: from the start of a clip (decoding stops there, so a long clip costs no more than a short
one), from a given frame on, or its last frames (every frame is decoded, at most the frame limit,
but only the last few are held in memory). A step keeps every n-th frame of those (a model that
learnt motion at 12 fps reads a 24 fps clip at a step of 2); `frame_step` chooses it from the
container's declared frame rate, before any frame is decoded.
"""

from __future__ import annotations

import io
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from media.encode import SMALL_FRAME_PIXELS
from media.errors import BeyondFrameLimit, DecodeTimeout, NotAVideo, VideoTooLarge

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


# The largest step: reading a clip's last frames holds (frames - 1) * step + 1 decoded frames, so a
# declared frame rate must not choose more.
MAX_STEP = 16
NPZ_FPS = 8.0  # the rate of an npz video (it declares none) when no rate is asked for


def frame_step(source_fps: float, rate: float | None) -> int:
    """Keep one frame in how many of a video at `source_fps` so that the frames kept run at about
    `rate` frames per second: the step n whose rate `source_fps / n` is nearest to `rate` as a
    ratio (an error in rate is a speed factor: from 30 fps, step 2 gives 15 fps, 1.25 times 12;
    step 3 gives 10 fps, 1.2 times slower: 3 is nearer). Steps n and n + 1 meet where the ratio
    `source_fps / rate` is sqrt(n (n + 1)) (1.41, 2.45, 3.46, ...), not at n + 0.5: 24 and 25 fps
    give 2 for a 12 fps model, 29.97 and 30 give 3, 8 gives 1. At least 1, at most MAX_STEP;
    1 when `rate` is unknown (None) or the video's rate is not positive."""
    if rate is None or not rate > 0 or not source_fps > 0:
        return 1
    ratio = source_fps / rate
    if not ratio < MAX_STEP:  # also infinite
        return MAX_STEP
    n = max(1, math.floor(ratio))
    if ratio * ratio > n * (n + 1):
        n += 1
    return min(n, MAX_STEP)


def strided_span(frames: int, step: int) -> int:
    """Frames of a video from the first of `frames` frames kept at `step` to the last."""
    return (frames - 1) * step + 1 if frames else 0


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
    fps: float  # the video's declared frame rate
    width: int
    height: int
    duration_s: float | None
    start: int = 0  # the index in the video of frames[0]
    length: int | None = None  # the video's frame count, when decoding reached its end
    step: int = 1  # frames[i] is the video's frame start + i * step

    @property
    def sampled_fps(self) -> float:
        """The rate of `frames`: the video's over the step."""
        return self.fps / self.step


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
    step: int | None = None,
    rate: float | None = None,
) -> DecodedVideo:
    """Decode `max_frames` frames (default: as many as the limit allows) of a video: frames
    `start`, `start + step`, ... (indices in the video). With `start=None`, its last
    `max_frames` frames at that step, the last one the video's last: every frame is decoded and
    only those are kept, and a video of more frames than the limit is refused (VideoTooLarge),
    since its last frames would be past it. A `start` past the end gives no frames (and the
    video's length). `step` (1 to MAX_STEP) defaults to `frame_step` of the video's declared
    rate and `rate` (1 without a rate). The frame limit counts frames decoded, those skipped
    included: frames asked for past it are refused (BeyondFrameLimit)."""
    if step is not None and not 1 <= step <= MAX_STEP:
        raise ValueError(f"step must be in [1, {MAX_STEP}], not {step}")
    handle, demuxer = _open_source(source, limits)
    try:
        return _decode(handle, demuxer, limits, max_frames, start, step, rate)
    finally:
        if handle is not source:
            handle.close()


def _kept_count(limits: DecodeLimits, max_frames: int | None, start: int | None, step: int) -> int:
    """How many frames to keep: `max_frames`, at most what the frame limit holds at `step`
    from the first frame; BeyondFrameLimit when those from `start` would pass the limit."""
    most = (limits.max_frames - 1) // step + 1
    want = min(max_frames or most, most)
    if start is not None and start + strided_span(want, step) > limits.max_frames:
        raise BeyondFrameLimit(
            f"frames past the first {limits.max_frames} are not decoded",
            last_start=limits.max_frames - strided_span(want, step),
        )
    return want


def _last_frames_start(length: int, want: int, step: int) -> int:
    """The first of the last `want` frames at `step` of a video of `length` frames: the last
    frame is kept, and every step-th before it."""
    held = min(length, strided_span(want, step))
    return length - held + (held - 1) % step


def _decode(
    handle: BinaryIO,
    demuxer: str,
    limits: DecodeLimits,
    max_frames: int | None,
    start: int | None,
    step: int | None,
    rate: float | None,
) -> DecodedVideo:
    if step is not None:  # refused before the container is opened
        _kept_count(limits, max_frames, start, step)
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
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 8.0
        step = step if step is not None else frame_step(fps, rate)
        want = _kept_count(limits, max_frames, start, step)
        if width * height > SMALL_FRAME_PIXELS:  # small frames decode faster on one thread
            stream.thread_type = "AUTO"
        # Reading the end holds the last frames that could be kept, in a bounded deque: where
        # the video ends, and so which of them are kept, is known only at its end. Frames are
        # held as decoded (not yet RGB) and only those kept are converted.
        tail: deque[av.VideoFrame] = deque(maxlen=strided_span(want, step))
        # One converter for the whole video: it keeps its scaler context from frame to frame,
        # where `to_ndarray(format=...)` would set one up for every frame (most of the time
        # spent on small frames).
        reformatter = VideoReformatter()

        def to_rgb(frame: av.VideoFrame) -> np.ndarray:
            return reformatter.reformat(frame, format="rgb24").to_ndarray()

        kept: list[np.ndarray] = []
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
                index, count = count, count + 1
                if start is None:
                    tail.append(frame)
                elif index >= first and (index - first) % step == 0:
                    kept.append(to_rgb(frame))
                    if len(kept) >= want:
                        ended = False
                        break
        except av.error.FFmpegError:
            if not count:  # truncated or corrupt before the first frame
                raise NotAVideo("the video data is corrupt or truncated") from None
        if not count:
            raise NotAVideo("no frame could be decoded")
        if start is None:
            first = _last_frames_start(count, want, step)
            held = list(tail)[first - (count - len(tail)) :: step]
            kept = [to_rgb(f) for f in held]
            tail.clear()
    length = count if ended else None
    if not kept:
        empty = np.zeros((0, height, width, 3), np.uint8)
        return DecodedVideo(empty, fps, width, height, duration, first, length, step)
    # Frames of one stream may change size mid-stream; keep the first size only.
    shape = kept[0].shape
    frames = np.stack([f for f in kept if f.shape == shape])
    return DecodedVideo(frames, fps, shape[1], shape[0], duration, first, length, step)


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
    step: int | None = None,
    rate: float | None = None,
) -> DecodedVideo:
    """Decode a video file (`start`, `step` and `rate` as `decode_video`); `.npz` files (a
    `video` uint8 [T, H, W, 3] array) are read without pickle. An npz video declares no frame
    rate: it is taken to be at `rate` already (NPZ_FPS without one), so its default step is 1."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        return decode_video(path, limits, max_frames, start, step, rate)
    from media.npz import read_npz

    if step is not None and not 1 <= step <= MAX_STEP:
        raise ValueError(f"step must be in [1, {MAX_STEP}], not {step}")
    video = read_npz(path.read_bytes())
    if start is None and len(video) > limits.max_frames:
        raise VideoTooLarge(
            f"the video has more than {limits.max_frames} frames, the limit for reading "
            "its last frames"
        )
    fps = rate or NPZ_FPS
    step = step if step is not None else frame_step(fps, rate)
    want = _kept_count(limits, max_frames, start, step)
    video = video[: limits.max_frames]
    first = _last_frames_start(len(video), want, step) if start is None else start
    frames = video[first : first + strided_span(want, step) : step]
    h, w = video.shape[1:3]
    return DecodedVideo(frames, fps, w, h, None, first, len(video), step)
