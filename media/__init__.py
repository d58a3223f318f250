"""Video decoding and encoding with PyAV, shared by the service, the trainer and the CLI."""

from media.decode import (
    MAX_STEP,
    DecodedVideo,
    DecodeLimits,
    decode_video,
    frame_step,
    read_video,
)
from media.encode import FORMATS, MAX_FPS, MIN_FPS, encode_video, playable_fps, write_video
from media.errors import BeyondFrameLimit, DecodeTimeout, MediaError, NotAVideo, VideoTooLarge

__all__ = [
    "FORMATS",
    "MAX_FPS",
    "MAX_STEP",
    "MIN_FPS",
    "BeyondFrameLimit",
    "DecodeLimits",
    "DecodeTimeout",
    "DecodedVideo",
    "MediaError",
    "NotAVideo",
    "VideoTooLarge",
    "decode_video",
    "encode_video",
    "frame_step",
    "playable_fps",
    "read_video",
    "write_video",
]
