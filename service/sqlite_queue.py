"""The embedded job queue: one SQLite file of jobs beside folders of inputs, results and
previews (`inputs/`, `results/`, `previews/`), for one machine. Any process that opens the same
file answers for every job (status, events, results)."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from service.jobs import STATUSES, ErrorType, Job, JobSpec, scoped_key
from service.queue import IdempotencyConflict, JobPage, QueueFull, UnknownCursor, worker_name

T = TypeVar("T")

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
# Columns added since the first schema: (name, declaration, what fills it in older rows).
_ADDED = [
    ("error_type", "TEXT", None),
    ("owner", "TEXT NOT NULL DEFAULT ''", "COALESCE(json_extract(params, '$.owner'), '')"),
    # 'waiting': a webhook to send once the job is finished; 'taken': handed to a sender.
    ("webhook_state", "TEXT", None),
]
# Indexes on added columns, made once the columns exist.
_INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_webhooks ON jobs (finished_at) WHERE webhook_state = 'waiting';
"""
_FINAL = "('completed', 'failed', 'cancelled')"


class SqliteQueue:
    """`params` holds the job's JobSpec as JSON; `idempotency_key` the key scoped by owner."""

    blocking = False

    def __init__(self, path: Path, max_attempts: int = 3) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self.inputs_dir = path.parent / "inputs"
        self.results_dir = path.parent / "results"
        self.previews_dir = path.parent / "previews"
        self.worker = worker_name()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
        for name, decl, fill in _ADDED:
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
                if fill is not None:
                    self._db.execute(f"UPDATE jobs SET {name} = {fill}")
        self._db.executescript(_INDEXES)
        self.reclaim_orphans()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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
        key = row["idempotency_key"]
        return Job(
            id=row["id"],
            spec=JobSpec.from_json(row["params"], task=row["task"]),
            status=row["status"],
            progress=row["progress"],
            attempts=row["attempts"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            error=row["error"],
            error_type=ErrorType(row["error_type"]) if row["error_type"] else None,
            result_format=row["result_format"],
            idempotency_key=key.partition(":")[2] if key else None,
            step=row["step"],
            num_steps=row["num_steps"],
            worker=row["worker"],
        )

    def enqueue(
        self,
        spec: JobSpec,
        idempotency_key: str | None = None,
        max_depth: int = 1 << 30,
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        scoped = scoped_key(spec.owner, idempotency_key) if idempotency_key else None

        def run(db: sqlite3.Connection) -> tuple[Job, bool]:
            if scoped:
                row = db.execute(
                    "SELECT * FROM jobs WHERE idempotency_key = ?", (scoped,)
                ).fetchone()
                if row:
                    job = self._job(row)
                    if job.spec.fingerprint != spec.fingerprint:
                        raise IdempotencyConflict
                    return job, False
            depth = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
            if depth >= max_depth:
                raise QueueFull
            job = Job(job_id or uuid.uuid4().hex, spec, idempotency_key=idempotency_key)
            db.execute(
                "INSERT INTO jobs (id, idempotency_key, task, params, batch_key, status,"
                " created_at, owner, webhook_state) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                (
                    job.id,
                    scoped,
                    spec.task,
                    spec.to_json(),
                    spec.batch_key,
                    job.created_at,
                    spec.owner,
                    "waiting" if spec.webhook else None,
                ),
            )
            return job, True

        return self._tx(run)

    def find(self, owner: str, idempotency_key: str) -> Job | None:
        """The job this owner created with this idempotency key, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE idempotency_key = ?",
                (scoped_key(owner, idempotency_key),),
            ).fetchone()
        return self._job(row) if row else None

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def list_jobs(
        self, owner: str, limit: int, after: str | None = None, status: str | None = None
    ) -> JobPage:
        """The owner's jobs, newest first (ties by id), from the index on (owner, time)."""
        where, args = ["owner = ?"], [owner]
        with self._lock:
            if after is not None:
                row = self._db.execute(
                    "SELECT created_at FROM jobs WHERE id = ? AND owner = ?", (after, owner)
                ).fetchone()
                if row is None:
                    raise UnknownCursor
                where.append("(created_at < ? OR (created_at = ? AND id < ?))")
                args += [row[0], row[0], after]
            if status is not None:
                where.append("status = ?")
                args.append(status)
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE {' AND '.join(where)}"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        jobs = [self._job(r) for r in rows[:limit]]
        return JobPage(jobs, jobs[-1].id if len(rows) > limit else None)

    def take_notifications(self, limit: int) -> list[Job]:
        def run(db: sqlite3.Connection) -> list[sqlite3.Row]:
            rows = db.execute(
                f"SELECT * FROM jobs WHERE webhook_state = 'waiting' AND status IN {_FINAL}"
                " ORDER BY finished_at LIMIT ?",
                (limit,),
            ).fetchall()
            db.executemany(
                "UPDATE jobs SET webhook_state = 'taken' WHERE id = ?", [(r["id"],) for r in rows]
            )
            return rows

        return [self._job(row) for row in self._tx(run)]

    def return_notifications(self, job_ids: list[str]) -> None:
        self._tx(
            lambda db: db.executemany(
                "UPDATE jobs SET webhook_state = 'waiting'"
                " WHERE id = ? AND webhook_state = 'taken'",
                [(i,) for i in job_ids],
            )
        )

    def reclaim_orphans(self) -> list[str]:
        """Jobs in progress under a worker of this host whose process is gone (the server was
        killed): claimable at once instead of when their lease runs out."""
        host = os.environ.get("MAGVIT_WORKER_NAME") or socket.gethostname()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, worker FROM jobs WHERE status = 'in_progress'"
            ).fetchall()
        orphans = []
        for row in rows:
            name, _, pid = (row["worker"] or "").rpartition("-")
            if name == host and pid.isdigit() and not _alive(int(pid)):
                orphans.append(row["id"])
        if orphans:
            self._tx(
                lambda db: db.executemany(
                    "UPDATE jobs SET lease_until = 0 WHERE id = ? AND status = 'in_progress'",
                    [(i,) for i in orphans],
                )
            )
        return orphans

    def claim(self, limit: int, lease_s: float, batch_key: str | None = None) -> list[Job]:
        """Up to `limit` claimable jobs (queued, or in progress with an expired lease), oldest
        first; with `batch_key`, only jobs of that key. Over-delivered jobs are dead-lettered."""
        now = time.time()

        def run(db: sqlite3.Connection) -> list[str]:
            where = "(status = 'queued' OR (status = 'in_progress' AND lease_until < ?))"
            args: list[Any] = [now]
            if batch_key is not None:
                where += " AND batch_key = ?"
                args.append(batch_key)
            rows = db.execute(
                f"SELECT * FROM jobs WHERE {where} ORDER BY created_at LIMIT ?",
                (*args, limit + 16),
            ).fetchall()
            claimed: list[str] = []
            for row in rows:
                if row["attempts"] >= self.max_attempts:
                    db.execute(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, error = ?,"
                        " error_type = ? WHERE id = ?",
                        (
                            now,
                            f"gave up after {row['attempts']} attempts (dead-lettered)",
                            ErrorType.DEAD_LETTER.value,
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

    def claim_batch(
        self, max_batch: int, max_wait_s: float, lease_s: float, block_s: float = 0.0
    ) -> list[Job]:
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

    def renew(self, job_ids: list[str], lease_s: float) -> None:
        until = time.time() + lease_s
        self._tx(
            lambda db: db.executemany(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'in_progress'",
                [(until, i) for i in job_ids],
            )
        )

    def set_progress(self, job_id: str, step: int, num_steps: int) -> None:
        progress = round(100 * step / max(num_steps, 1), 1)
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET progress = ?, step = ?, num_steps = ? WHERE id = ?"
                " AND status = 'in_progress'",
                (progress, step, num_steps, job_id),
            )
        )

    # Files named by job ids only, never by anything a client sent.
    def set_preview(self, job_id: str, png: bytes) -> None:
        _write_atomic(self.previews_dir / f"{job_id}.png", png)

    def get_preview(self, job_id: str) -> bytes | None:
        return _read(self.previews_dir / f"{job_id}.png")

    def put_input(self, job_id: str, data: bytes) -> None:
        _write_atomic(self.inputs_dir / f"{job_id}.npz", data)

    def get_input(self, job_id: str) -> bytes | None:
        return _read(self.inputs_dir / f"{job_id}.npz")

    def delete_input(self, job_id: str) -> None:
        (self.inputs_dir / f"{job_id}.npz").unlink(missing_ok=True)

    def put_result(self, job_id: str, data: bytes) -> None:
        _write_atomic(self.results_dir / job_id, data)

    def get_result(self, job_id: str) -> bytes | None:
        return _read(self.results_dir / job_id)

    def _drop_work_files(self, job_id: str) -> None:
        (self.previews_dir / f"{job_id}.png").unlink(missing_ok=True)
        self.delete_input(job_id)

    def _finish(
        self,
        job_id: str,
        status: str,
        error: str | None = None,
        error_type: ErrorType | None = None,
        result_format: str | None = None,
    ) -> None:
        self._drop_work_files(job_id)
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, error_type = ?,"
                " result_format = ?,"
                " progress = CASE WHEN ? = 'completed' THEN 100 ELSE progress END"
                " WHERE id = ? AND status = 'in_progress'",
                (
                    status,
                    time.time(),
                    error,
                    error_type.value if error_type else None,
                    result_format,
                    status,
                    job_id,
                ),
            )
        )

    def complete(self, job_id: str, result_format: str) -> None:
        self._finish(job_id, "completed", result_format=result_format)

    def fail(self, job_id: str, error: str, error_type: ErrorType = ErrorType.INTERNAL) -> None:
        self._finish(job_id, "failed", error=error, error_type=error_type)

    def release(self, job_ids: list[str]) -> None:
        """Give claimed jobs back (shutdown): queued again, the attempt not counted."""
        self._tx(
            lambda db: db.executemany(
                "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0),"
                " lease_until = NULL WHERE id = ? AND status = 'in_progress'",
                [(i,) for i in job_ids],
            )
        )

    def cancel(self, job_id: str, error_type: ErrorType = ErrorType.CANCELLED) -> Job | None:
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, error_type = ?"
                " WHERE id = ? AND status IN ('queued', 'in_progress')",
                (time.time(), error_type.value, job_id),
            )
        )
        (self.previews_dir / f"{job_id}.png").unlink(missing_ok=True)
        return self.get(job_id)

    def depth(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {r[0]: r[1] for r in rows}

    def expire(self, before: float) -> list[str]:
        """Forget finished jobs older than `before`; returns their ids (to delete files)."""

        def run(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                (before,),
            ).fetchall()
            db.executemany("DELETE FROM jobs WHERE id = ?", [(r[0],) for r in rows])
            return [r[0] for r in rows]

        expired = self._tx(run)
        for job_id in expired:
            (self.results_dir / job_id).unlink(missing_ok=True)
            self._drop_work_files(job_id)
        return expired

    def durability_problem(self) -> str | None:
        return None  # a file on this machine's disk, written in transactions

    def stats(self) -> dict[str, int]:
        """Depth (waiting), pending (claimed, unfinished), redeliveries, dead letters."""
        with self._lock:
            row = self._db.execute(
                "SELECT SUM(status = 'queued'), SUM(status = 'in_progress'),"
                " SUM(MAX(attempts - 1, 0)), SUM(error_type = ?) FROM jobs",
                (ErrorType.DEAD_LETTER.value,),
            ).fetchone()
        depth, pending, redeliveries, dead = (int(v or 0) for v in row)
        return {
            "depth": depth,
            "pending": pending,
            "lag": depth,
            "redeliveries": redeliveries,
            "dead_letters": dead,
        }


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
