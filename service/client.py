"""A small synchronous client of the magvit API, for scripts and `magvit batch`.

Only httpx and the standard library: importing it loads neither torch nor FastAPI. Answers come
back as typed objects (`Job`, `JobEvent`, `JobPage`, `Result`); every error answer of the API
(`{"error": {"type", "message"}}`) raises an `ApiError` of the class for its type (`NotFound`,
`QueueFull`, `InvalidInput`, ...), carrying the type and the HTTP status. Busy answers (429, 503)
are retried after their `Retry-After`, as are lost connections where a retry is safe (reads, and
submissions with an idempotency key), for `max_wait_s` in all per call.

    with Client("http://127.0.0.1:8000", api_key="...") as client:
        job, _ = client.submit("fp", Path("clip.mp4"), idempotency_key="clip-1", frames=48)
        job = client.wait(job.id, on_event=print)
        Path("out.mp4").write_bytes(client.result(job.id).content)
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx

FINAL = ("completed", "failed", "cancelled")
RETRY_STATUSES = (429, 503)
SAFE_METHODS = ("GET", "HEAD", "DELETE")


# ------------------------------------------------------------------------------------ errors
class ApiError(Exception):
    """An error answer of the API: its `type` (as in the body), HTTP `status` and `message`;
    `retry_after`: seconds, when the server said."""

    type = "error"

    def __init__(
        self, status: int, type_: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message
        self.retry_after = retry_after


class BadRequest(ApiError):
    type = "bad_request"


class Unauthorized(ApiError):
    type = "unauthorized"


class NotFound(ApiError):
    type = "not_found"


class MethodNotAllowed(ApiError):
    type = "method_not_allowed"


class RequestTimeout(ApiError):
    type = "timeout"


class Conflict(ApiError):
    type = "conflict"


class TooLarge(ApiError):
    type = "too_large"


class UnsupportedMedia(ApiError):
    type = "unsupported_media"


class InvalidInput(ApiError):
    type = "invalid_input"


class QueueFull(ApiError):
    type = "queue_full"


class Unavailable(ApiError):
    type = "unavailable"


ERRORS: dict[str, type[ApiError]] = {
    cls.type: cls
    for cls in (
        BadRequest,
        Unauthorized,
        NotFound,
        MethodNotAllowed,
        RequestTimeout,
        Conflict,
        TooLarge,
        UnsupportedMedia,
        InvalidInput,
        QueueFull,
        Unavailable,
    )
}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: not worth parsing, wait a little
        return 1.0


def error_from(response: httpx.Response) -> ApiError:
    """The typed error of an error answer (any body: a proxy's HTML page too)."""
    type_, message = "error", response.reason_phrase or f"HTTP {response.status_code}"
    try:
        detail = response.json()["error"]
        type_, message = str(detail["type"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        pass
    cls = ERRORS.get(type_, ApiError)
    return cls(response.status_code, type_, message, _retry_after(response))


# ----------------------------------------------------------------------------------- answers
def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _int(value: str | int | None) -> int | None:
    return int(value) if value is not None and value != "" else None


def _float(value: str | float | None) -> float | None:
    return float(value) if value is not None and value != "" else None


@dataclass(frozen=True)
class Job:
    """A job as `GET /v1/jobs/{id}` answers it."""

    id: str
    url: str
    task: str
    status: str
    progress: float
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    error_type: str | None
    seed: int
    format: str
    result_url: str | None
    # One frame of the upload in `frame_step` went to the model (None: no upload); the result
    # plays at `frame_rate` frames per second (None: a server that does not say).
    frame_step: int | None = None
    frame_rate: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        created = _time(data["created_at"])
        assert created is not None
        return cls(
            id=data["id"],
            url=data["url"],
            task=data["task"],
            status=data["status"],
            progress=float(data["progress"]),
            attempts=int(data["attempts"]),
            created_at=created,
            started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")),
            error=data.get("error"),
            error_type=data.get("error_type"),
            seed=int(data["seed"]),
            format=data["format"],
            result_url=data.get("result_url"),
            frame_step=_int(data.get("frame_step")),
            frame_rate=_float(data.get("frame_rate")),
        )

    @property
    def done(self) -> bool:
        return self.status in FINAL

    @property
    def seconds_queued(self) -> float | None:
        if self.started_at is None:
            return None
        # The two times come from different clocks' readings (the API and a worker), each
        # rounded: a job claimed at once can read a few milliseconds below zero.
        return max(0.0, (self.started_at - self.created_at).total_seconds())

    @property
    def seconds_running(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


@dataclass(frozen=True)
class JobEvent:
    """One event of `GET /v1/jobs/{id}/events`: `step` of `num_steps` while decoding (every
    window's steps counted, for long videos)."""

    kind: str  # "progress" or "status" (the last one, when the job is done)
    id: str
    status: str
    progress: float
    step: int | None = None
    num_steps: int | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class JobPage:
    items: list[Job]
    next: str | None  # the `after` of the next page; None after the last


@dataclass(frozen=True)
class Result:
    content: bytes
    media_type: str
    job_id: str
    seed: int | None
    frame_step: int | None = None  # as `Job`'s, from the X-Frame-Step header
    frame_rate: float | None = None  # from X-Frame-Rate


class Submitted(NamedTuple):
    job: Job
    created: bool  # False: an idempotency key's earlier job


# ------------------------------------------------------------------------------------ client
class Client:
    """The API at `base_url`. Thread-safe: one client may serve many threads."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_wait_s: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.max_wait_s = max_wait_s
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -------------------------------------------------------------------------- requests
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, retried after 429 and 503 (their Retry-After, else backing off) and, where
        that is safe, after a lost connection, for `max_wait_s` in all."""
        safe = method in SAFE_METHODS or "idempotency-key" in {
            k.lower() for k in kwargs.get("headers", {})
        }
        deadline = time.monotonic() + self.max_wait_s
        delay = 0.5
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if not safe or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if response.status_code < 400:
                return response
            error = error_from(response)
            if response.status_code not in RETRY_STATUSES:
                raise error
            wait = error.retry_after if error.retry_after is not None else delay
            if time.monotonic() + wait > deadline:
                raise error
            time.sleep(wait)
            delay = min(delay * 2, 10.0)

    # ---------------------------------------------------------------------------- calls
    def tasks(self) -> dict[str, Any]:
        """`GET /v1/tasks`: the tasks, the video shape, class names."""
        return self._send("GET", "/v1/tasks").json()

    def submit(
        self,
        task: str,
        video: bytes | Path | None = None,
        *,
        filename: str | None = None,
        idempotency_key: str | None = None,
        **fields: str | int | float | bool | None,
    ) -> Submitted:
        """`POST /v1/jobs`: a job of `task` on `video` (bytes or a file) with the task's form
        fields (`seed`, `steps`, `frames`, `class_id`, `webhook`, ...; None: left out)."""
        data = {"task": task} | {k: _form(v) for k, v in fields.items() if v is not None}
        files = None
        if video is not None:
            if isinstance(video, Path):
                filename = filename or video.name
                video = video.read_bytes()
            name = filename or "video"
            mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
            files = {"video": (name, video, mime)}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._send("POST", "/v1/jobs", data=data, files=files, headers=headers)
        return Submitted(Job.from_json(response.json()), response.status_code == 202)

    def job(self, job_id: str) -> Job:
        return Job.from_json(self._send("GET", f"/v1/jobs/{job_id}").json())

    def jobs(self, limit: int = 20, after: str | None = None, status: str | None = None) -> JobPage:
        """`GET /v1/jobs`: one page of the caller's jobs, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        if status is not None:
            params["status"] = status
        page = self._send("GET", "/v1/jobs", params=params).json()
        return JobPage([Job.from_json(j) for j in page["items"]], page["next"])

    def iter_jobs(self, status: str | None = None, page_size: int = 100) -> Iterator[Job]:
        """Every job of the caller, newest first, page after page."""
        after = None
        while True:
            page = self.jobs(page_size, after, status)
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self._send("DELETE", f"/v1/jobs/{job_id}").json())

    def result(self, job_id: str) -> Result:
        """A completed job's video (Conflict while it is not completed)."""
        r = self._send("GET", f"/v1/jobs/{job_id}/result")
        return Result(
            r.content,
            r.headers.get("content-type", ""),
            job_id,
            _int(r.headers.get("x-seed")),
            _int(r.headers.get("x-frame-step")),
            _float(r.headers.get("x-frame-rate")),
        )

    def events(self, job_id: str, read_timeout: float = 60.0) -> Iterator[JobEvent]:
        """The job's server-sent events, until it is done or the server ends the stream."""
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from(response)
            kind = "message"
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    yield JobEvent(
                        kind,
                        data["id"],
                        data["status"],
                        float(data["progress"]),
                        data.get("step"),
                        data.get("num_steps"),
                    )
                elif not line:
                    kind = "message"

    def wait(
        self,
        job_id: str,
        on_event: Callable[[JobEvent], None] | None = None,
        timeout: float | None = None,
    ) -> Job:
        """The job once it is done, following its events (reconnecting, and polling its
        status, when a stream ends early); TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # A quiet stream (a job waiting in the queue) ends by its read timeout, at the
            # deadline at the latest.
            left = 60.0 if deadline is None else min(60.0, deadline - time.monotonic())
            try:
                for event in self.events(job_id, read_timeout=max(0.1, left)):
                    if on_event is not None:
                        on_event(event)
                    if event.done or (deadline is not None and time.monotonic() > deadline):
                        break
            except (httpx.TransportError, Unavailable):
                pass  # the stream broke or the server is stopping: ask again below
            job = self.job(job_id)
            if job.done:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status}")
            time.sleep(1.0)


def _form(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
