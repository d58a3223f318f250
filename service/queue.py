"""The durable job queue: an interface and its embedded SQLite backend.

Delivery is at least once: a worker claims jobs under a lease (visibility timeout) that it renews
while it works; a job whose lease runs out (its worker died) is claimed again; a job claimed
`max_attempts` times without finishing is dead-lettered (status failed, with the reason).
Jobs, their inputs and results survive a restart of the server.
"""

from __future__ import annotations

import json
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

    @property
    def done(self) -> bool:
        return self.status in FINAL


class JobQueue(Protocol):
    """What the routes and the scheduler need from a queue backend."""

    def enqueue(self, task: str, params: dict, batch_key: str, idempotency_key: str | None,
                max_depth: int, job_id: str | None) -> tuple[Job, bool]: ...  # fmt: skip
    def get(self, job_id: str) -> Job | None: ...
    def find(self, idempotency_key: str) -> Job | None: ...
    def claim(self, limit: int, lease_s: float, batch_key: str | None = None) -> list[Job]: ...
    def renew(self, job_ids: list[str], lease_s: float) -> None: ...
    def set_progress(self, job_id: str, progress: float) -> None: ...
    def complete(self, job_id: str, result_format: str) -> None: ...
    def fail(self, job_id: str, error: str) -> None: ...
    def release(self, job_ids: list[str]) -> None: ...
    def cancel(self, job_id: str) -> Job | None: ...
    def depth(self) -> int: ...
    def counts(self) -> dict[str, int]: ...
    def expire(self, before: float) -> list[str]: ...


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
    result_format TEXT
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, created_at);
"""


class SqliteQueue:
    def __init__(self, path: Path, max_attempts: int = 3) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
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
            id=row["id"], task=row["task"], params=json.loads(row["params"]),
            batch_key=row["batch_key"], status=row["status"], progress=row["progress"],
            attempts=row["attempts"], created_at=row["created_at"], started_at=row["started_at"],
            finished_at=row["finished_at"], error=row["error"],
            result_format=row["result_format"], idempotency_key=row["idempotency_key"],
        )  # fmt: skip

    def enqueue(self, task, params, batch_key, idempotency_key=None, max_depth=1 << 30,
                job_id=None):  # fmt: skip
        """Returns (job, created): an existing job for a known idempotency key."""

        def run(db):
            if idempotency_key:
                row = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?",
                                 (idempotency_key,)).fetchone()  # fmt: skip
                if row:
                    return self._job(row), False
            depth = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
            if depth >= max_depth:
                raise QueueFull
            job = Job(job_id or uuid.uuid4().hex, task, params, batch_key,
                      idempotency_key=idempotency_key)  # fmt: skip
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
            row = self._db.execute("SELECT * FROM jobs WHERE idempotency_key = ?",
                                   (idempotency_key,)).fetchone()  # fmt: skip
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
            rows = db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY created_at LIMIT ?",
                              (*args, limit + 16)).fetchall()  # fmt: skip
            claimed = []
            for row in rows:
                if row["attempts"] >= self.max_attempts:
                    db.execute(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, error = ?"
                        " WHERE id = ?",
                        (now, f"gave up after {row['attempts']} attempts (dead-lettered)",
                         row["id"]),
                    )  # fmt: skip
                    continue
                if len(claimed) == limit:
                    break
                db.execute(
                    "UPDATE jobs SET status = 'in_progress', attempts = attempts + 1,"
                    " lease_until = ?, started_at = COALESCE(started_at, ?) WHERE id = ?",
                    (now + lease_s, now, row["id"]),
                )
                claimed.append(row["id"])
            return claimed

        ids = self._tx(run)
        return [job for job in (self.get(i) for i in ids) if job]

    def oldest_batch_key(self) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT batch_key FROM jobs WHERE status = 'queued' OR (status = 'in_progress'"
                " AND lease_until < ?) ORDER BY created_at LIMIT 1", (time.time(),)
            ).fetchone()  # fmt: skip
        return row[0] if row else None

    def renew(self, job_ids, lease_s):
        until = time.time() + lease_s
        self._tx(lambda db: db.executemany(
            "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'in_progress'",
            [(until, i) for i in job_ids]))  # fmt: skip

    def set_progress(self, job_id, progress):
        self._tx(lambda db: db.execute(
            "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'in_progress'",
            (progress, job_id)))  # fmt: skip

    def _finish(self, job_id, status, error=None, result_format=None):
        self._tx(lambda db: db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, error = ?, result_format = ?,"
            " progress = CASE WHEN ? = 'completed' THEN 100 ELSE progress END"
            " WHERE id = ? AND status = 'in_progress'",
            (status, time.time(), error, result_format, status, job_id)))  # fmt: skip

    def complete(self, job_id, result_format):
        self._finish(job_id, "completed", result_format=result_format)

    def fail(self, job_id, error):
        self._finish(job_id, "failed", error=error)

    def release(self, job_ids):
        """Give claimed jobs back (shutdown): queued again, the attempt not counted."""
        self._tx(lambda db: db.executemany(
            "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), lease_until = NULL"
            " WHERE id = ? AND status = 'in_progress'", [(i,) for i in job_ids]))  # fmt: skip

    def cancel(self, job_id):
        def run(db):
            db.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?"
                " AND status IN ('queued', 'in_progress')", (time.time(), job_id))  # fmt: skip

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
            rows = db.execute("SELECT id FROM jobs WHERE finished_at IS NOT NULL AND"
                              " finished_at < ?", (before,)).fetchall()  # fmt: skip
            db.executemany("DELETE FROM jobs WHERE id = ?", [(r[0],) for r in rows])
            return [r[0] for r in rows]

        return self._tx(run)
