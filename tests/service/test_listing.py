"""`GET /v1/jobs` and the queues' `list_jobs`: the caller's jobs only, newest first, by cursor,
filtered by status, on both backends."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest

from service.queue import JobQueue, UnknownCursor
from service.redis_queue import RedisQueue
from service.sqlite_queue import SqliteQueue
from tests.service.conftest import Server, make_settings, spec

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path) -> Iterator[str]:
    """A queue URL of each backend, empty."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        server = request.getfixturevalue("redis_server")
        RedisQueue(server.url).r.flushall()
        yield server.url


def _open(url: str) -> JobQueue:
    if url.startswith("sqlite:///"):
        from pathlib import Path

        return SqliteQueue(Path(url.removeprefix("sqlite:///")))
    return RedisQueue(url)


def _all(queue: JobQueue, owner: str, limit: int, status: str | None = None) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = queue.list_jobs(owner, limit, after, status)
        pages.append([j.id for j in page.jobs])
        if page.next is None:
            return pages
        after = page.next


def test_queues_list_an_owners_jobs_newest_first(backend):
    queue = _open(backend)
    mine = []
    for n in range(5):
        mine.append(queue.enqueue(spec(owner="a", seed=n))[0].id)
        queue.enqueue(spec(owner="b", seed=n))
        time.sleep(0.002)
    assert _all(queue, "a", 2) == [mine[4:2:-1], mine[2:0:-1], mine[:1]]
    assert _all(queue, "a", 5) == [mine[::-1]]
    theirs = sum(_all(queue, "b", 3), [])
    assert len(theirs) == 5 and not set(theirs) & set(mine)
    assert queue.list_jobs("c", 10).jobs == []
    queue.cancel(mine[1])
    queue.cancel(mine[3])
    assert sum(_all(queue, "a", 1, "cancelled"), []) == [mine[3], mine[1]]
    assert sum(_all(queue, "a", 10, "queued"), []) == [mine[4], mine[2], mine[0]]
    b_job = queue.list_jobs("b", 1).jobs[0].id
    for cursor in (b_job, "no-such-job"):  # another owner's job is as unknown as none
        with pytest.raises(UnknownCursor):
            queue.list_jobs("a", 2, cursor)
    queue.close()


def test_redis_listings_skip_expired_jobs_and_the_janitor_drops_them(redis_server):
    q = RedisQueue(redis_server.url, result_ttl_s=1)
    q.r.flushall()
    old, _ = q.enqueue(spec(owner="a"))
    new, _ = q.enqueue(spec(owner="a"))
    q.r.delete(q._k("job", old.id))  # as its time-to-live does
    assert [j.id for j in q.list_jobs("a", 10).jobs] == [new.id]
    assert q.expire(time.time() + 1) == [old.id]
    assert q.r.zcard(q._k("owner", "a")) == 1


def test_sqlite_jobs_stored_before_listings_are_listed(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:  # the schema before the owner column
        db.executescript(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE,"
            " task TEXT NOT NULL, params TEXT NOT NULL, batch_key TEXT NOT NULL,"
            " status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,"
            " attempts INTEGER NOT NULL DEFAULT 0, lease_until REAL, created_at REAL NOT NULL,"
            " started_at REAL, finished_at REAL, error TEXT, result_format TEXT,"
            " step INTEGER NOT NULL DEFAULT 0, num_steps INTEGER NOT NULL DEFAULT 0,"
            " worker TEXT, error_type TEXT)"
        )
        for n, owner in enumerate(("a", "b", None)):
            params = json.loads(spec(owner=owner or "").to_json())
            if owner is None:
                del params["owner"]  # older still: no owner in the record
            db.execute(
                "INSERT INTO jobs (id, task, params, batch_key, status, created_at)"
                " VALUES (?, 'cg', ?, 'k', 'completed', ?)",
                (f"old{n}", json.dumps(params), float(n)),
            )
    queue = SqliteQueue(path)
    assert [j.id for j in queue.list_jobs("a", 10).jobs] == ["old0"]
    assert [j.id for j in queue.list_jobs("", 10).jobs] == ["old2"]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_the_api_lists_the_callers_jobs(kind, tiny_checkpoint, tmp_path, request):
    queue_url = None
    if kind == "redis":
        queue_url = request.getfixturevalue("redis_server").url
        RedisQueue(queue_url).r.flushall()
    settings = make_settings(
        tiny_checkpoint, tmp_path, workers=0, api_keys=["key-a", "key-b"], queue_url=queue_url
    )
    srv = Server(settings).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            data = {"task": "cg", "class_id": "1", "steps": "1"}
            mine = [c.post("/v1/jobs", data=data, headers=A).json()["id"] for _ in range(5)]
            theirs = c.post("/v1/jobs", data=data, headers=B).json()["id"]
            c.delete(f"/v1/jobs/{mine[0]}", headers=A)
            seen, after = [], None
            for _ in range(5):
                params = {"limit": 2} | ({"after": after} if after else {})
                r = c.get("/v1/jobs", params=params, headers=A)
                assert r.status_code == 200, r.text
                page = r.json()
                assert len(page["items"]) <= 2
                seen += [item["id"] for item in page["items"]]
                after = page["next"]
                if after is None:
                    break
            assert seen == mine[::-1]
            item = c.get("/v1/jobs", headers=A).json()["items"][0]
            assert item == c.get(f"/v1/jobs/{mine[-1]}", headers=A).json()
            assert [i["id"] for i in c.get("/v1/jobs", headers=B).json()["items"]] == [theirs]
            cancelled = c.get("/v1/jobs", params={"status": "cancelled"}, headers=A).json()
            assert [i["id"] for i in cancelled["items"]] == [mine[0]]
            for params in ({"status": "done"}, {"limit": 0}, {"limit": 101}, {"after": theirs}):
                r = c.get("/v1/jobs", params=params, headers=A)
                assert r.status_code == 422, (params, r.text)
                assert r.json()["error"]["type"] == "invalid_input"
            assert c.get("/v1/jobs").status_code == 401
    finally:
        srv.stop()
