"""Errors of video decoding, each meaning one thing a client did wrong."""


class MediaError(ValueError):
    """Base class: the input cannot be used as a video."""


class NotAVideo(MediaError):
    """Empty, random bytes, a still image, audio only, or corrupt before the first frame."""


class VideoTooLarge(MediaError):
    """Beyond a limit on bytes, pixels, frames or duration."""


class DecodeTimeout(MediaError):
    """Decoding took longer than its wall-time limit."""
