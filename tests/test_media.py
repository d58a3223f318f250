"""Video decode/encode with limits, on a corpus of good and bad inputs made here."""

from __future__ import annotations

import time

import numpy as np
import pytest

import media.decode
from media import (
    MAX_FPS,
    MAX_STEP,
    MIN_FPS,
    BeyondFrameLimit,
    DecodeLimits,
    NotAVideo,
    VideoTooLarge,
    decode_video,
    encode_video,
    frame_step,
    playable_fps,
    read_video,
    write_video,
)
from tests.support import videos


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "avi", "mov", "mkv"])
def test_reads_common_containers(fmt):
    out = decode_video(videos.clip(fmt, frames=10))
    assert out.frames.dtype == np.uint8 and out.frames.shape == (10, 32, 32, 3)
    # The bar moves: frame 0 is bright at the left, frame 5 is not.
    assert out.frames[0, :, :4].mean() > 150 and out.frames[5, :, :4].mean() < 60


def test_only_the_frames_asked_for_are_decoded():
    assert decode_video(videos.clip("mp4", frames=20), max_frames=4).frames.shape[0] == 4


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "npz"])
def test_encode_round_trip(tmp_path, fmt):
    frames = videos.moving_bar(8, 17, 31)  # odd sizes are padded for 4:2:0 codecs
    path = write_video(tmp_path / f"v.{fmt}", frames)
    back = read_video(path).frames
    assert back.shape[0] == 8 and back.shape[1] >= 17 and back.shape[2] >= 31
    if fmt == "npz":
        assert np.array_equal(back, frames)
    else:
        assert np.abs(back[:, :17, :31].astype(int) - frames).mean() < 12


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_frames_are_the_codecs_own_rgb_conversion(fmt):
    # The decoder converts every frame with one reused scaler: the same pixels as PyAV's
    # conversion of each frame alone, for every frame of a clip that moves.
    import io

    import av

    data = videos.clip(fmt, frames=12)
    with av.open(io.BytesIO(data)) as container:
        expected = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert np.array_equal(decode_video(data).frames, expected)
    assert np.array_equal(decode_video(data, max_frames=5, start=None).frames, expected[-5:])


@pytest.mark.parametrize("size", [(64, 64), (256, 320)])  # one thread / the codec's threads
def test_encoded_small_and_large_frames_keep_their_quality(size):
    h, w = size
    ramp = np.linspace(0, 160, w, dtype=np.float32)[None, None, :, None]  # a gradient to code
    frames = np.maximum(videos.moving_bar(8, h, w), ramp.astype(np.uint8))
    back = decode_video(encode_video(frames, "mp4")).frames
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 1.5


def test_encode_rejects_bad_frames():
    with pytest.raises(ValueError):
        encode_video(np.zeros((4, 8, 8)), "mp4")
    with pytest.raises(ValueError):
        encode_video(np.zeros((4, 8, 8, 3)), "flv")


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: b"", NotAVideo),
        (lambda: np.random.default_rng(0).bytes(20000), NotAVideo),
        (videos.png_image, NotAVideo),
        (videos.audio_only, NotAVideo),
        (videos.truncated, NotAVideo),
        (videos.huge_resolution, VideoTooLarge),
        (videos.long_clip, VideoTooLarge),
    ],
    ids=["empty", "random", "png", "audio", "truncated", "8k", "long"],
)
def test_bad_inputs_fail_fast_with_typed_errors(make, error):
    data = make()
    start = time.monotonic()
    with pytest.raises(error):
        decode_video(data, DecodeLimits(max_pixels=1920 * 1080, max_seconds=60))
    assert time.monotonic() - start < 5


def test_byte_and_frame_limits():
    data = videos.clip("mp4", frames=10)
    with pytest.raises(VideoTooLarge):
        decode_video(data, DecodeLimits(max_bytes=len(data) - 1))
    assert decode_video(data, DecodeLimits(max_frames=3)).frames.shape[0] == 3


def test_npz_without_pickle(tmp_path):
    bad = tmp_path / "obj.npz"
    np.savez(bad, video=np.array([object()], dtype=object))
    with pytest.raises(NotAVideo):
        read_video(bad)


def _playlists(secret: str) -> list[bytes]:
    return [
        f"ffconcat version 1.0\nfile {secret}\n".encode(),
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{secret}\n#EXT-X-ENDLIST\n".encode(),
        f'<?xml version="1.0"?><MPD><Period><BaseURL>{secret}</BaseURL></Period></MPD>'.encode(),
        f"1\n00:00:00,000 --> 00:00:01,000\n{secret}\n".encode(),
    ]


@pytest.mark.parametrize("kind", range(4), ids=["concat", "hls", "dash", "subtitles"])
def test_uploads_cannot_name_other_files(tmp_path, monkeypatch, kind):
    """A concat script or playlist must not make the decoder read a file on the server."""
    (tmp_path / "secret.webm").write_bytes(videos.clip("webm", frames=10))
    monkeypatch.chdir(tmp_path)
    data = _playlists("secret.webm")[kind]
    with pytest.raises(NotAVideo) as err:
        decode_video(data)
    assert "Error" not in str(err.value)  # no Python exception class names


def test_file_names_are_read_as_plain_files(tmp_path):
    """A path is opened as a file, never through an FFmpeg protocol (file:, concat:, ...)."""
    good = tmp_path / "good.mp4"
    good.write_bytes(videos.clip("mp4", frames=4))
    assert decode_video(good).frames.shape[0] == 4
    with pytest.raises(FileNotFoundError):
        decode_video(f"concat:{good}|{good}")


def test_frames_from_a_start_frame_or_the_end():
    data = videos.clip("mp4", frames=20)
    every = decode_video(data).frames
    tail = decode_video(data, max_frames=3, start=None)
    assert tail.start == 17 and tail.length == 20 and tail.frames.shape[0] == 3
    assert np.abs(tail.frames.astype(int) - every[17:]).max() == 0
    middle = decode_video(data, max_frames=2, start=5)
    assert middle.start == 5 and middle.length is None  # stopped before the end
    assert np.array_equal(middle.frames, every[5:7])
    past = decode_video(data, max_frames=2, start=30)
    assert past.frames.shape == (0, 32, 32, 3) and past.length == 20


def test_the_frame_limit_bounds_reading_the_end():
    data = videos.clip("mp4", frames=12)
    with pytest.raises(VideoTooLarge, match="last frames"):
        decode_video(data, DecodeLimits(max_frames=10), max_frames=2, start=None)
    assert decode_video(data, DecodeLimits(max_frames=12), max_frames=2, start=None).start == 10
    with pytest.raises(VideoTooLarge):  # frames past the limit are never decoded
        decode_video(data, DecodeLimits(max_frames=10), max_frames=2, start=9)


def test_the_end_of_an_npz_video(tmp_path):
    frames = videos.moving_bar(9, 16, 16)
    path = write_video(tmp_path / "v.npz", frames)
    tail = read_video(path, max_frames=2, start=None)
    assert tail.start == 7 and np.array_equal(tail.frames, frames[7:])
    assert read_video(path, max_frames=2, start=4).frames.shape[0] == 2


@pytest.mark.parametrize(
    ("source_fps", "rate", "step"),
    [
        (24, 12, 2),
        (25, 12, 2),
        (30, 12, 3),  # 10 fps is nearer 12 than 15 is, as a speed factor (1.2 against 1.25)
        (29.97, 12, 3),
        (8, 12, 1),
        (12, 12, 1),
        (16, 12, 1),  # 1.33: nearer 1 than 2
        (17.4, 12, 2),  # 1.45: past sqrt(2), where half-up rounding would still say 1
        (60, 12, 5),
        (8, 4, 2),
        (12, 4, 3),
        (30, None, 1),  # the model's rate unknown
        (0, 12, 1),  # the video's rate unknown
        (1000, 12, MAX_STEP),  # bounded
        (float("inf"), 12, MAX_STEP),
    ],
)
def test_frame_step_is_the_nearest_rate_as_a_ratio(source_fps, rate, step):
    assert frame_step(source_fps, rate) == step


def test_every_nth_frame_from_the_start_or_a_start_frame():
    data = videos.clip("mp4", frames=20)
    every = decode_video(data).frames
    head = decode_video(data, max_frames=4, step=3)
    assert head.step == 3 and head.start == 0 and head.length is None
    assert np.array_equal(head.frames, every[0:12:3])
    middle = decode_video(data, max_frames=3, start=5, step=2)
    assert middle.start == 5 and np.array_equal(middle.frames, every[5:11:2])
    short = decode_video(data, max_frames=8, start=10, step=4)  # runs out: 10, 14, 18
    assert short.length == 20 and np.array_equal(short.frames, every[10::4])
    assert decode_video(data, step=3).frames.shape[0] == 7  # 0, 3, ..., 18


def test_the_last_frames_at_a_step_end_on_the_last_frame():
    data = videos.clip("mp4", frames=20)
    every = decode_video(data).frames
    tail = decode_video(data, max_frames=3, start=None, step=4)
    assert tail.start == 11 and tail.length == 20 and tail.step == 4
    assert np.array_equal(tail.frames, every[[11, 15, 19]])
    # Fewer frames than asked for: aligned on the last frame all the same.
    few = decode_video(data, max_frames=10, start=None, step=3)
    assert few.start == 1 and np.array_equal(few.frames, every[1::3])
    one = decode_video(data, max_frames=1, start=None, step=5)
    assert one.start == 19 and np.array_equal(one.frames, every[19:])


def test_the_step_follows_the_declared_rate(monkeypatch):
    film = videos.encode_with(videos.moving_bar(12), "mp4", "libx264", fps=24)
    opened = []
    real_open = media.decode.av.open
    monkeypatch.setattr(
        media.decode.av, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k)
    )
    out = decode_video(film, max_frames=4, rate=12.0)
    assert opened == [1]  # the step is chosen from the header of the one opened container
    assert out.fps == 24 and out.step == 2 and out.sampled_fps == 12
    assert np.array_equal(out.frames, decode_video(film).frames[0:8:2])
    assert decode_video(film, rate=None).step == 1
    assert decode_video(film, rate=12.0, step=1).step == 1  # an explicit step wins
    slow = videos.encode_with(videos.moving_bar(6), "mp4", "libx264", fps=8)
    assert decode_video(slow, rate=12.0).step == 1
    with pytest.raises(ValueError, match="step"):
        decode_video(film, step=MAX_STEP + 1)


def test_the_frame_limit_counts_the_frames_skipped():
    data = videos.clip("mp4", frames=20)
    limits = DecodeLimits(max_frames=10)
    assert decode_video(data, limits, step=3).frames.shape[0] == 4  # 0, 3, 6, 9: ten decoded
    assert decode_video(data, limits, max_frames=3, start=3, step=3).frames.shape[0] == 3
    with pytest.raises(BeyondFrameLimit) as err:  # 4, 7, 10: frame 10 is past the limit
        decode_video(data, limits, max_frames=3, start=4, step=3)
    assert err.value.last_start == 3 and isinstance(err.value, VideoTooLarge)
    with pytest.raises(BeyondFrameLimit):  # refused whether the step is given or chosen
        decode_video(
            videos.encode_with(videos.moving_bar(20), "mp4", "libx264", 24),
            limits,
            max_frames=3,
            start=6,
            rate=12.0,
        )
    with pytest.raises(VideoTooLarge, match="last frames"):
        decode_video(data, DecodeLimits(max_frames=19), max_frames=2, start=None, step=2)


def test_an_npz_video_at_a_step(tmp_path):
    frames = videos.moving_bar(9, 16, 16)
    path = write_video(tmp_path / "v.npz", frames)
    tail = read_video(path, max_frames=2, start=None, step=3)
    assert tail.start == 5 and np.array_equal(tail.frames, frames[[5, 8]])
    assert np.array_equal(read_video(path, max_frames=2, start=1, step=4).frames, frames[[1, 5]])
    # An npz declares no rate: it is taken to be at the rate asked for.
    auto = read_video(path, rate=12.0)
    assert auto.step == 1 and auto.sampled_fps == 12 and auto.frames.shape[0] == 9


def test_encoded_at_any_playable_rate():
    frames = videos.moving_bar(6)
    assert decode_video(encode_video(frames, "mp4", 30000 / 1001 / 2)).fps == 15000 / 1001
    assert decode_video(encode_video(frames, "webm", 6.25)).fps == 6.25
    for rate in (0, 0.1, 120):  # outside what every format plays
        with pytest.raises(ValueError, match="fps"):
            encode_video(frames, "gif", rate)
    assert playable_fps(1000) == MAX_FPS and playable_fps(0.001) == MIN_FPS
    assert playable_fps(14.985) == 14.985
    assert decode_video(encode_video(frames, "gif", MAX_FPS)).frames.shape[0] == 6
