"""The one check of a request against the model that serves it, shared by the routes (before a
job is queued) and the scheduler (before a job runs). Pure: no I/O, no model."""

from __future__ import annotations

from models.config import ModelConfig
from models.tasks import Task

MAX_FRAMES = 128  # the default of the settings' `max_output_frames`


class InvalidRequest(ValueError):
    """The request cannot be served as asked; the message says why, for the client. `status`:
    400 for a missing or unwanted upload, 404 for a task the model lacks, 422 otherwise."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def check_request(
    config: ModelConfig,
    task: Task,
    class_id: int | None,
    upload_frames: int | None,
    frames: int | None = None,
    max_frames: int = MAX_FRAMES,
) -> None:
    """The whole check. `upload_frames`: how many frames the stored upload has (None: no
    upload); `frames`: the length asked for (None: the model's window)."""
    check_fields(config, task, class_id, upload_frames is not None, frames, None, max_frames)
    if upload_frames is not None:
        check_frames(config, task, upload_frames)


def check_fields(
    config: ModelConfig,
    task: Task,
    class_id: int | None,
    has_video: bool,
    frames: int | None = None,
    start: int | None = None,
    max_frames: int = MAX_FRAMES,
    frame_step: int | None = None,
) -> None:
    """Everything but the upload's frame count (known once it is decoded)."""
    if task.code not in config.tasks:
        raise InvalidRequest(f"this model does not serve task {task.code!r}", 404)
    if task.needs_class and class_id is None:
        raise InvalidRequest(f"task {task.code!r} needs class_id")
    if class_id is not None and not 0 <= class_id < config.num_classes:
        raise InvalidRequest(f"class_id must be in [0, {config.num_classes - 1}]")
    if task.needs_video and not has_video:
        raise InvalidRequest(f"task {task.code!r} needs a video file in the 'video' field", 400)
    if not task.needs_video and has_video:
        raise InvalidRequest(f"task {task.code!r} takes no video", 400)
    if start is not None and not task.conditions_on_frames:
        raise InvalidRequest(f"start is for frame prediction (fp, cfp), not {task.code!r}")
    if start is not None and start < 0:
        raise InvalidRequest("start must be at least 0")
    if frame_step is not None and not task.needs_video:
        raise InvalidRequest(f"frame_step is for tasks on a video, not {task.code!r}")
    if frames is not None:
        check_length(config, task, frames, max_frames)


def check_length(config: ModelConfig, task: Task, frames: int, max_frames: int) -> None:
    """A video of `frames` frames, made by sliding the model's window (fp and cfp)."""
    if not task.conditions_on_frames:
        raise InvalidRequest(f"frames is for frame prediction (fp, cfp), not {task.code!r}")
    t, c = config.num_frames, config.cond_frames
    low = c + 1
    if not low <= frames <= max_frames:
        raise InvalidRequest(f"frames must be in [{low}, {max_frames}]")
    if frames > t and t <= c:
        raise InvalidRequest(f"this model's window ({t} frames, {c} conditioning) cannot slide")


def _needed(config: ModelConfig, task: Task) -> int:
    return max(task.num_input_frames(config.num_frames, config.cond_frames), 1)


def _at_step(step: int) -> str:
    return f" at a frame step of {step}" if step > 1 else ""


def _span(needed: int, step: int) -> int:
    """Frames of a video from the first of `needed` frames at `step` to the last."""
    return (needed - 1) * step + 1


def check_frames(
    config: ModelConfig, task: Task, frames: int, step: int = 1, length: int | None = None
) -> None:
    """The upload has enough frames for the task (`frames`: those kept, one in `step`, of a
    video of `length` frames when known)."""
    needed = _needed(config, task)
    if frames < needed:
        has = length if step > 1 and length is not None else frames
        raise InvalidRequest(
            f"task {task.code!r} needs at least {_span(needed, step)} frames{_at_step(step)}; "
            f"the video has {has}"
        )


def check_start(
    config: ModelConfig, task: Task, start: int, kept: int, length: int | None, step: int = 1
) -> None:
    """The condition frames from `start` (`start`, `start + step`, ...) were all in the video
    (`kept` of them were decoded; `length`: the video's frame count, known when decoding
    reached its end)."""
    needed = _needed(config, task)
    if kept < needed:
        last = (length or 0) - _span(needed, step)
        if last < 0:
            raise InvalidRequest(
                f"task {task.code!r} needs at least {_span(needed, step)} frames"
                f"{_at_step(step)}; the video has {length}"
            )
        raise InvalidRequest(
            f"start must be in [0, {last}]: the video has {length} frames and the condition "
            f"takes {needed}{_at_step(step)}"
        )
