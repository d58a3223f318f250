"""The queue backend a URL names."""

from __future__ import annotations

from pathlib import Path

from service.queue import JobQueue


def open_queue(
    url: str | None, data_dir: Path, max_attempts: int = 3, result_ttl_s: float = 86_400.0
) -> JobQueue:
    """`sqlite:///path` (default: <data_dir>/jobs.sqlite3) or `redis://host:port/db` (also
    `rediss://`, `unix://`)."""
    if url is None or url.startswith("sqlite:///"):
        from service.sqlite_queue import SqliteQueue

        path = Path(url[len("sqlite:///") :]) if url else data_dir / "jobs.sqlite3"
        return SqliteQueue(path, max_attempts)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from service.redis_queue import RedisQueue

        return RedisQueue(url, max_attempts=max_attempts, result_ttl_s=result_ttl_s)
    raise ValueError(f"unknown queue URL {url!r}: use sqlite:///PATH or redis://HOST:PORT/DB")
