"""The durable job queue: an interface, its embedded SQLite backend, and the backend factory.

Delivery is at least once: a worker claims jobs under a lease (visibility timeout) that it renews
while it works; a job whose lease runs out (its worker died) is claimed again; a job claimed
`max_attempts` times without finishing is dead-lettered (status failed, with the reason).
Jobs, their inputs and results survive a restart of the server. A queue also keeps each job's
input and result bytes and its latest preview, so that whoever holds the queue can answer for
any job. `service/redis_queue.py` is the backend for many machines.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")
FINAL = ("completed", "failed", "cancelled")


@dataclass
class Job:
    id: str
    task: str
    params: dict[str, Any]
    batch_key: str
    status: str = "queued"
    progress: float = 0.0
    attempts: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result_format: str | None = None
    idempotency_key: str | None = None
    step: int = 0
    num_steps: int = 0
    worker: str | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL


class JobQueue(Protocol):
    """What the routes and the scheduler need from a queue backend.

    `blocking`: whether `claim_batch` waits for work itself (else the scheduler waits to be
    notified of new jobs).
    """

    blocking: bool

    def enqueue(
        self,
        task: str,
        params: dict,
        batch_key: str,
        idempotency_key: str | None,
        max_depth: int,
        job_id: str | None,
    ) -> tuple[Job, bool]: ...
    def get(self, job_id: str) -> Job | None: ...
    def find(self, idempotency_key: str) -> Job | None: ...
    def claim_batch(
        self, max_batch: int, max_wait_s: float, lease_s: float, block_s: float
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
    def fail(self, job_id: str, error: str) -> None: ...
    def release(self, job_ids: list[str]) -> None: ...
    def cancel(self, job_id: str) -> Job | None: ...
    def depth(self) -> int: ...
    def counts(self) -> dict[str, int]: ...
    def expire(self, before: float) -> list[str]: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...


def worker_name() -> str:
    """This process's name as a queue consumer: MAGVIT_WORKER_NAME (e.g. the pod's name) or
    the host name, and the pid."""
    return f"{os.environ.get('MAGVIT_WORKER_NAME') or socket.gethostname()}-{os.getpid()}"


def open_queue(
    url: str | None, data_dir: Path, max_attempts: int = 3, result_ttl_s: float = 86_400.0
) -> JobQueue:
    """The backend a queue URL names: `sqlite:///path` (default: <data_dir>/jobs.sqlite3) or
    `redis://host:port/db` (also `rediss://`)."""
    if url is None or url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :]) if url else data_dir / "jobs.sqlite3"
        return SqliteQueue(path, max_attempts)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from service.redis_queue import RedisQueue

        return RedisQueue(url, max_attempts=max_attempts, result_ttl_s=result_ttl_s)
    raise ValueError(f"unknown queue URL {url!r}: use sqlite:///PATH or redis://HOST:PORT/DB")


def batch_key(task: str, params: dict[str, Any]) -> str:
    """Jobs with equal keys can share one forward pass: same task and decoding options."""
    opts = ("steps", "temperature", "choice_temperature", "guidance_scale")
    return "|".join([task, *(str(params[k]) for k in opts)])


class QueueFull(Exception):
    """The queue holds its maximum number of waiting jobs."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    task TEXT NOT NULL,
    params TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    result_format TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    num_steps INTEGER NOT NULL DEFAULT 0,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, created_at);
"""


class SqliteQueue:
    """One file of jobs beside folders of inputs and results (`inputs/`, `results/`)."""

    blocking = False

    def __init__(self, path: Path, max_attempts: int = 3) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self.inputs_dir = path.parent / "inputs"
        self.results_dir = path.parent / "results"
        self.worker = worker_name()
        self._previews: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, fn):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"],
            task=row["task"],
            params=json.loads(row["params"]),
            batch_key=row["batch_key"],
            status=row["status"],
            progress=row["progress"],
            attempts=row["attempts"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            error=row["error"],
            result_format=row["result_format"],
            idempotency_key=row["idempotency_key"],
            step=row["step"],
            num_steps=row["num_steps"],
            worker=row["worker"],
        )

    def enqueue(
        self, task, params, batch_key, idempotency_key=None, max_depth=1 << 30, job_id=None
    ):
        """Returns (job, created): an existing job for a known idempotency key."""

        def run(db):
            if idempotency_key:
                row = db.execute(
                    "SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row:
                    return self._job(row), False
            depth = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
            if depth >= max_depth:
                raise QueueFull
            job = Job(
                job_id or uuid.uuid4().hex, task, params, batch_key, idempotency_key=idempotency_key
            )
            db.execute(
                "INSERT INTO jobs (id, idempotency_key, task, params, batch_key, status,"
                " created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?)",
                (job.id, idempotency_key, task, json.dumps(params), batch_key, job.created_at),
            )
            return job, True

        return self._tx(run)

    def find(self, idempotency_key):
        """The job created with this idempotency key, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
        return self._job(row) if row else None

    def get(self, job_id):
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def claim(self, limit, lease_s, batch_key=None):
        """Up to `limit` claimable jobs (queued, or in progress with an expired lease), oldest
        first; with `batch_key`, only jobs of that key. Over-delivered jobs are dead-lettered."""
        now = time.time()

        def run(db):
            where = "(status = 'queued' OR (status = 'in_progress' AND lease_until < ?))"
            args: list[Any] = [now]
            if batch_key is not None:
                where += " AND batch_key = ?"
                args.append(batch_key)
            rows = db.execute(
                f"SELECT * FROM jobs WHERE {where} ORDER BY created_at LIMIT ?", (*args, limit + 16)
            ).fetchall()
            claimed = []
            for row in rows:
                if row["attempts"] >= self.max_attempts:
                    db.execute(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, error = ?"
                        " WHERE id = ?",
                        (
                            now,
                            f"gave up after {row['attempts']} attempts (dead-lettered)",
                            row["id"],
                        ),
                    )
                    continue
                if len(claimed) == limit:
                    break
                db.execute(
                    "UPDATE jobs SET status = 'in_progress', attempts = attempts + 1,"
                    " lease_until = ?, started_at = COALESCE(started_at, ?), worker = ?"
                    " WHERE id = ?",
                    (now + lease_s, now, self.worker, row["id"]),
                )
                claimed.append(row["id"])
            return claimed

        ids = self._tx(run)
        return [job for job in (self.get(i) for i in ids) if job]

    def oldest_batch_key(self) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT batch_key FROM jobs WHERE status = 'queued' OR (status = 'in_progress'"
                " AND lease_until < ?) ORDER BY created_at LIMIT 1",
                (time.time(),),
            ).fetchone()
        return row[0] if row else None

    def claim_batch(self, max_batch, max_wait_s, lease_s, block_s=0.0):
        """The oldest claimable job and up to `max_batch - 1` more of its batch key, waiting
        until `max_wait_s` after the first one's arrival for them. [] at once when idle."""
        key = self.oldest_batch_key()
        if key is None:
            return []
        batch = self.claim(1, lease_s, key)
        if not batch:
            return []
        deadline = batch[0].created_at + max_wait_s
        while len(batch) < max_batch:
            batch += self.claim(max_batch - len(batch), lease_s, key)
            if len(batch) >= max_batch or time.time() >= deadline:
                break
            time.sleep(min(0.01, max(0.0, deadline - time.time())))
        return batch

    def renew(self, job_ids, lease_s):
        until = time.time() + lease_s
        self._tx(
            lambda db: db.executemany(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'in_progress'",
                [(until, i) for i in job_ids],
            )
        )

    def set_progress(self, job_id, step, num_steps):
        progress = round(100 * step / max(num_steps, 1), 1)
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET progress = ?, step = ?, num_steps = ? WHERE id = ?"
                " AND status = 'in_progress'",
                (progress, step, num_steps, job_id),
            )
        )

    # Previews are only for watching a running job: kept in memory, never on disk.
    def set_preview(self, job_id, png):
        self._previews[job_id] = png

    def get_preview(self, job_id):
        return self._previews.get(job_id)

    def put_input(self, job_id, data):
        _write_atomic(self.inputs_dir / f"{job_id}.npz", data)

    def get_input(self, job_id):
        path = self.inputs_dir / f"{job_id}.npz"
        return path.read_bytes() if path.is_file() else None

    def delete_input(self, job_id):
        (self.inputs_dir / f"{job_id}.npz").unlink(missing_ok=True)

    def put_result(self, job_id, data):
        _write_atomic(self.results_dir / job_id, data)

    def get_result(self, job_id):
        path = self.results_dir / job_id
        return path.read_bytes() if path.is_file() else None

    def _finish(self, job_id, status, error=None, result_format=None):
        self._previews.pop(job_id, None)
        self.delete_input(job_id)
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, result_format = ?,"
                " progress = CASE WHEN ? = 'completed' THEN 100 ELSE progress END"
                " WHERE id = ? AND status = 'in_progress'",
                (status, time.time(), error, result_format, status, job_id),
            )
        )

    def complete(self, job_id, result_format):
        self._finish(job_id, "completed", result_format=result_format)

    def fail(self, job_id, error):
        self._finish(job_id, "failed", error=error)

    def release(self, job_ids):
        """Give claimed jobs back (shutdown): queued again, the attempt not counted."""
        self._tx(
            lambda db: db.executemany(
                "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0),"
                " lease_until = NULL WHERE id = ? AND status = 'in_progress'",
                [(i,) for i in job_ids],
            )
        )

    def cancel(self, job_id):
        self._previews.pop(job_id, None)

        def run(db):
            db.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?"
                " AND status IN ('queued', 'in_progress')",
                (time.time(), job_id),
            )

        self._tx(run)
        return self.get(job_id)

    def depth(self):
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[
                0
            ]

    def counts(self):
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {r[0]: r[1] for r in rows}

    def expire(self, before):
        """Forget finished jobs older than `before`; returns their ids (to delete files)."""

        def run(db):
            rows = db.execute(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (before,)
            ).fetchall()
            db.executemany("DELETE FROM jobs WHERE id = ?", [(r[0],) for r in rows])
            return [r[0] for r in rows]

        expired = self._tx(run)
        for job_id in expired:
            (self.results_dir / job_id).unlink(missing_ok=True)
            self.delete_input(job_id)
        return expired

    def stats(self):
        """Depth (waiting), pending (claimed, unfinished), redeliveries, dead letters."""
        with self._lock:
            row = self._db.execute(
                "SELECT SUM(status = 'queued'), SUM(status = 'in_progress'),"
                " SUM(MAX(attempts - 1, 0)), SUM(error LIKE '%dead-lettered%') FROM jobs"
            ).fetchone()
        depth, pending, redeliveries, dead = (int(v or 0) for v in row)
        return {
            "depth": depth,
            "pending": pending,
            "lag": depth,
            "redeliveries": redeliveries,
            "dead_letters": dead,
        }


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
