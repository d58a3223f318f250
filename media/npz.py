"""Videos as npz: one uint8 array `video` [T, H, W, 3]; read without pickle."""

from __future__ import annotations

import io

import numpy as np

from media.errors import NotAVideo


def write_npz(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, video=np.asarray(frames, dtype=np.uint8))
    return buf.getvalue()


def read_npz(data: bytes) -> np.ndarray:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            video = npz["video"]
    except (ValueError, KeyError, OSError, EOFError) as err:
        raise NotAVideo(f"not a video npz ({err})") from None
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or not video.shape[0]:
        raise NotAVideo("an npz video holds `video`, uint8 [T, H, W, 3]")
    return video
