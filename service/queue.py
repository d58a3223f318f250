"""The job queue's interface, shared by its backends (`service/sqlite_queue.py`,
`service/redis_queue.py`; `service/queue_factory.py` picks one from a URL).

Delivery is at least once: a worker claims jobs under a lease (visibility timeout) that it renews
while it works; a job whose lease runs out (its worker died) is claimed again; a job claimed
`max_attempts` times without finishing is dead-lettered (status failed, error type
`dead_letter`). A queue also keeps each job's input and result bytes and its latest preview, so
that whoever holds the queue can answer for any job.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Protocol

from service.jobs import ErrorType, Job, JobSpec


class QueueFull(Exception):
    """The queue holds its maximum number of waiting jobs."""


class QueueUnavailable(Exception):
    """The queue's server cannot be reached (for now)."""


class IdempotencyConflict(Exception):
    """An idempotency key was used again with a different request."""


class UnknownCursor(Exception):
    """A listing's `after` is not a job of that owner (or no longer is: it expired)."""


@dataclass(frozen=True)
class JobPage:
    """One page of an owner's jobs, newest first; `next`: the `after` of the next page (a job
    id), None after the last page. A page may hold fewer jobs than asked even when more follow
    (a backend bounds the jobs it looks at per page); the list ends when `next` is None."""

    jobs: list[Job]
    next: str | None


def worker_name() -> str:
    """This process's name as a queue consumer: MAGVIT_WORKER_NAME (e.g. the pod's name) or
    the host name, and the pid."""
    return f"{os.environ.get('MAGVIT_WORKER_NAME') or socket.gethostname()}-{os.getpid()}"


class JobQueue(Protocol):
    """What the routes and the scheduler need from a queue backend.

    `blocking`: whether `claim_batch` waits for work itself (else the scheduler waits to be
    notified of new jobs).
    """

    blocking: bool

    def enqueue(
        self,
        spec: JobSpec,
        idempotency_key: str | None = None,
        max_depth: int = 1 << 30,
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        """(job, created). A known idempotency key (of the same owner) returns its job, or
        raises IdempotencyConflict when the request differs; a full queue raises QueueFull."""
        ...

    def get(self, job_id: str) -> Job | None: ...
    def find(self, owner: str, idempotency_key: str) -> Job | None: ...
    def list_jobs(
        self, owner: str, limit: int, after: str | None = None, status: str | None = None
    ) -> JobPage:
        """The owner's jobs, newest first, `limit` at most, after the job `after` (UnknownCursor
        when it is not one of the owner's), only those of `status` if given."""
        ...

    def take_notifications(self, limit: int) -> list[Job]:
        """Up to `limit` finished jobs with a webhook whose notification nobody has taken yet;
        each is handed out once, to one caller (of any process)."""
        ...

    def return_notifications(self, job_ids: list[str]) -> None:
        """Notifications taken but not delivered (the process stops): to be taken again."""
        ...

    def claim_batch(
        self, max_batch: int, max_wait_s: float, lease_s: float, block_s: float = 0.0
    ) -> list[Job]: ...
    def renew(self, job_ids: list[str], lease_s: float) -> None: ...
    def set_progress(self, job_id: str, step: int, num_steps: int) -> None: ...
    def set_preview(self, job_id: str, png: bytes) -> None: ...
    def get_preview(self, job_id: str) -> bytes | None: ...
    def put_input(self, job_id: str, data: bytes) -> None: ...
    def get_input(self, job_id: str) -> bytes | None: ...
    def delete_input(self, job_id: str) -> None: ...
    def put_result(self, job_id: str, data: bytes) -> None: ...
    def get_result(self, job_id: str) -> bytes | None: ...
    def complete(self, job_id: str, result_format: str) -> None: ...
    def fail(self, job_id: str, error: str, error_type: ErrorType = ErrorType.INTERNAL) -> None: ...
    def release(self, job_ids: list[str]) -> None: ...
    def cancel(self, job_id: str, error_type: ErrorType = ErrorType.CANCELLED) -> Job | None:
        """Cancel a job not yet finished; `error_type` says why (a client, a time-out)."""
        ...

    def depth(self) -> int: ...
    def counts(self) -> dict[str, int]: ...
    def expire(self, before: float) -> list[str]: ...
    def stats(self) -> dict[str, int]: ...
    def durability_problem(self) -> str | None:
        """Why accepted jobs would not survive a restart of the queue's server, or None."""
        ...

    def close(self) -> None: ...
