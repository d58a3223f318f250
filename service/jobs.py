"""The job record: what a client asked for (`JobSpec`, frozen, JSON round-trip) and where its job
stands (`Job`), with the typed reason of a failure (`ErrorType`). Queue backends store these;
the routes, the scheduler and the engine pass them on without re-parsing anything."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from models.config import DEFAULT_FRAME_RATE
from models.options import DecodeOptions

STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")
FINAL = ("completed", "failed", "cancelled")
ANONYMOUS = ""  # the owner of jobs made while API keys are off


class ErrorType(StrEnum):
    """Why a job did not complete; the routes map it to a status code."""

    INVALID_INPUT = "invalid_input"
    INTERNAL = "internal"
    DEAD_LETTER = "dead_letter"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


def key_id(api_key: str) -> str:
    """The id jobs record for the API key that made them: a keyed hash, never the key."""
    return hmac.new(b"magvit job owner", api_key.encode(), hashlib.sha256).hexdigest()[:32]


def options_to_dict(options: DecodeOptions) -> dict[str, Any]:
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def options_from_dict(data: dict[str, Any]) -> DecodeOptions:
    """DecodeOptions from a dict; keys that are not its fields are ignored, missing ones keep
    their defaults."""
    names = {f.name for f in dataclasses.fields(DecodeOptions)}
    return DecodeOptions(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class JobSpec:
    """One request as validated, ready to run."""

    task: str
    seed: int
    class_id: int | None
    format: str
    options: DecodeOptions
    preview: bool = False
    owner: str = ANONYMOUS
    # A digest of what the client sent (fields and upload): a replayed idempotency key must
    # come with the same request.
    fingerprint: str = ""
    # The length of the video to make (fp, cfp), by sliding the model's window; None: one window.
    frames: int | None = None
    # Where the job's final state is POSTed (service/webhooks.py); checked at submission.
    webhook: str | None = None
    # The upload was read one frame in `frame_step` (the model's frame rate, or the request's
    # `frame_step`); None: no upload.
    frame_step: int | None = None
    # Frames per second the result is written at: the upload's rate over the step, or the
    # model's rate for tasks without a video (records stored before it: 8).
    frame_rate: float = DEFAULT_FRAME_RATE

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can share one forward pass: same task, decoding options and
        length (keys of one-window jobs are those of records made before lengths existed)."""
        key: list[Any] = [self.task, options_to_dict(self.options)]
        if self.frames is not None:
            key.append(self.frames)
        return json.dumps(key, sort_keys=True)

    def to_json(self) -> str:
        data = dataclasses.asdict(self) | {"options": options_to_dict(self.options)}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, task: str | None = None) -> JobSpec:
        """The record `to_json` wrote (`task`: for records stored without one)."""
        data = json.loads(text)
        # Jobs stored before the record existed kept the options beside the other fields.
        options = options_from_dict(data.get("options", data))
        return cls(
            task=str(data.get("task") or task),
            seed=int(data["seed"]),
            class_id=data.get("class_id"),
            format=data["format"],
            options=options,
            preview=bool(data.get("preview", False)),
            owner=data.get("owner", ANONYMOUS),
            fingerprint=data.get("fingerprint", ""),
            frames=data.get("frames"),
            webhook=data.get("webhook"),
            frame_step=data.get("frame_step"),
            frame_rate=float(data.get("frame_rate", DEFAULT_FRAME_RATE)),
        )


@dataclass
class Job:
    id: str
    spec: JobSpec
    status: str = "queued"
    progress: float = 0.0
    attempts: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    error_type: ErrorType | None = None
    result_format: str | None = None
    idempotency_key: str | None = None
    step: int = 0
    num_steps: int = 0
    worker: str | None = None

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def batch_key(self) -> str:
        return self.spec.batch_key

    @property
    def done(self) -> bool:
        return self.status in FINAL


def scoped_key(owner: str, idempotency_key: str) -> str:
    """Idempotency keys are per API key: the same key from two owners names two jobs."""
    return f"{owner}:{idempotency_key}"
