"""Errors of video decoding, each meaning one thing a client did wrong."""


class MediaError(ValueError):
    """Base class: the input cannot be used as a video."""


class NotAVideo(MediaError):
    """Empty, random bytes, a still image, audio only, or corrupt before the first frame."""


class VideoTooLarge(MediaError):
    """Beyond a limit on bytes, pixels, frames or duration."""


class DecodeTimeout(MediaError):
    """Decoding took longer than its wall-time limit."""


class BeyondFrameLimit(VideoTooLarge):
    """Frames asked for lie past the frames decoded at most; `last_start`: the last first frame
    that would not."""

    def __init__(self, message: str, last_start: int) -> None:
        super().__init__(message)
        self.last_start = last_start
