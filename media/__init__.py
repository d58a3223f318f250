"""Video decoding and encoding with PyAV, shared by the service, the trainer and the CLI."""

from media.decode import DecodedVideo, DecodeLimits, decode_video, read_video
from media.encode import FORMATS, encode_video, write_video
from media.errors import DecodeTimeout, MediaError, NotAVideo, VideoTooLarge

__all__ = [
    "FORMATS",
    "DecodeLimits",
    "DecodeTimeout",
    "DecodedVideo",
    "MediaError",
    "NotAVideo",
    "VideoTooLarge",
    "decode_video",
    "encode_video",
    "read_video",
    "write_video",
]
