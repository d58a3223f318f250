"""Request and response models of the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from models.config import ModelConfig
from models.tasks import TASKS
from service.jobs import ErrorType, Job


def _time(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, UTC) if t is not None else None


class JobOut(BaseModel):
    id: str
    url: str
    task: str
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled"]
    progress: float
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    error_type: ErrorType | None
    seed: int
    format: str
    result_url: str | None
    # One frame of the upload in `frame_step` went to the model (null: no upload); the result
    # plays at `frame_rate` frames per second.
    frame_step: int | None
    frame_rate: float

    @classmethod
    def from_job(cls, job: Job, url: str) -> JobOut:
        return cls(
            id=job.id,
            url=url,
            task=job.task,
            status=job.status,
            progress=job.progress,
            attempts=job.attempts,
            created_at=_time(job.created_at),
            started_at=_time(job.started_at),
            finished_at=_time(job.finished_at),
            error=job.error,
            error_type=job.error_type,
            seed=job.spec.seed,
            format=job.spec.format,
            result_url=f"{url}/result" if job.status == "completed" else None,
            frame_step=job.spec.frame_step,
            frame_rate=job.spec.frame_rate,
        )


class JobList(BaseModel):
    """A page of the caller's jobs, newest first."""

    items: list[JobOut]
    # The `after` of the next page (a job id); null after the last page. A page may hold
    # fewer items than `limit` even when more follow: the list ends when `next` is null.
    next: str | None


class TaskInfo(BaseModel):
    code: str
    name: str
    description: str
    needs_video: bool
    needs_class: bool
    input_frames: int
    takes_frames: bool  # `frames` and `start`: frame prediction, from the clip's end


class TaskList(BaseModel):
    tasks: list[TaskInfo]
    video_shape: list[int]  # [T, H, W]
    token_shape: list[int]
    num_classes: int
    class_names: list[str]  # what each class id means (index = class id)
    cond_frames: int
    max_frames: int  # the most `frames` this server makes
    # The frames per second the model learnt motion at (uploads are read at about this rate);
    # null when unknown.
    frame_rate: float | None

    @classmethod
    def build(cls, config: ModelConfig, max_frames: int) -> TaskList:
        tasks = [
            TaskInfo(
                code=t.code,
                name=t.name,
                description=t.description,
                needs_video=t.needs_video,
                needs_class=t.needs_class,
                input_frames=t.num_input_frames(config.num_frames, config.cond_frames),
                takes_frames=t.conditions_on_frames,
            )
            for code, t in TASKS.items()
            if code in config.tasks
        ]
        return cls(
            tasks=tasks,
            video_shape=list(config.video_shape),
            token_shape=list(config.token_shape),
            num_classes=config.num_classes,
            class_names=[config.class_name(i) for i in range(config.num_classes)],
            cond_frames=config.cond_frames,
            max_frames=max_frames,
            frame_rate=config.frame_rate,
        )
