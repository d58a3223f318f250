"""The one check of a request against the model that serves it, shared by the routes (before a
job is queued) and the scheduler (before a job runs). Pure: no I/O, no model."""

from __future__ import annotations

from models.config import ModelConfig
from models.tasks import Task


class InvalidRequest(ValueError):
    """The request cannot be served as asked; the message says why, for the client. `status`:
    400 for a missing or unwanted upload, 404 for a task the model lacks, 422 otherwise."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def check_request(
    config: ModelConfig, task: Task, class_id: int | None, frames: int | None
) -> None:
    """The whole check. `frames`: how many frames the upload has (None: no upload)."""
    check_fields(config, task, class_id, has_video=frames is not None)
    if frames is not None:
        check_frames(config, task, frames)


def check_fields(config: ModelConfig, task: Task, class_id: int | None, has_video: bool) -> None:
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


def check_frames(config: ModelConfig, task: Task, frames: int) -> None:
    needed = max(task.num_input_frames(config.num_frames, config.cond_frames), 1)
    if frames < needed:
        raise InvalidRequest(
            f"task {task.code!r} needs at least {needed} frames; the video has {frames}"
        )
