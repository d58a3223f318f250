"""The API client: typed errors as the API names them, bounded retries of busy answers, typed
jobs and events, and no torch or FastAPI behind it."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from service import client as api
from service.errors import _TYPES
from tests.support import videos


def test_every_error_type_of_the_api_has_its_exception():
    assert set(_TYPES.values()) == set(api.ERRORS)
    response = httpx.Response(
        429, json={"error": {"type": "queue_full", "message": "full"}}, headers={"Retry-After": "3"}
    )
    error = api.error_from(response)
    assert isinstance(error, api.QueueFull) and isinstance(error, api.ApiError)
    assert (error.status, error.type, error.message, error.retry_after) == (
        429,
        "queue_full",
        "full",
        3,
    )
    other = api.error_from(httpx.Response(502, text="<html>bad gateway</html>"))
    assert type(other) is api.ApiError and other.status == 502


def _job(status: str = "queued") -> dict:
    return {
        "id": "j1",
        "url": "http://x/v1/jobs/j1",
        "task": "fp",
        "status": status,
        "progress": 0.0,
        "attempts": 1,
        "created_at": "2024-01-01T00:00:00Z",
        "started_at": "2024-01-01T00:00:02Z",
        "finished_at": "2024-01-01T00:00:05Z" if status == "completed" else None,
        "error": None,
        "error_type": None,
        "seed": 4,
        "format": "mp4",
        "result_url": None,
    }


def test_busy_answers_are_retried_after_retry_after():
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(
                429,
                json={"error": {"type": "queue_full", "message": "."}},
                headers={"Retry-After": "0"},
            )
        if len(calls) == 2:
            return httpx.Response(
                503,
                json={"error": {"type": "unavailable", "message": "."}},
                headers={"Retry-After": "0.1"},
            )
        return httpx.Response(202, json=_job())

    with api.Client("http://x", "k", transport=httpx.MockTransport(answer)) as c:
        job, created = c.submit("fp", b"video", filename="a.mp4", idempotency_key="i", steps=2)
    assert created and job.id == "j1" and job.seconds_queued == 2 and len(calls) == 3
    sent = calls[-1]
    assert sent.headers["authorization"] == "Bearer k" and sent.headers["idempotency-key"] == "i"
    assert b'name="steps"\r\n\r\n2' in sent.read()


def test_retries_are_bounded_and_other_errors_are_not_retried():
    calls = []

    def busy(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            503,
            json={"error": {"type": "unavailable", "message": "busy"}},
            headers={"Retry-After": "0.2"},
        )

    start = time.monotonic()
    with (
        api.Client("http://x", transport=httpx.MockTransport(busy), max_wait_s=0.5) as c,
        pytest.raises(api.Unavailable, match="busy"),
    ):
        c.job("j1")
    assert 2 <= len(calls) <= 4 and time.monotonic() - start < 2

    def missing(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404, json={"error": {"type": "not_found", "message": "no job"}})

    calls.clear()
    with (
        api.Client("http://x", transport=httpx.MockTransport(missing)) as c,
        pytest.raises(api.NotFound) as info,
    ):
        c.job("j1")
    assert info.value.status == 404 and len(calls) == 1


def test_a_lost_connection_is_retried_only_where_that_is_safe():
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("reset")
        return httpx.Response(202, json=_job())

    with api.Client("http://x", transport=httpx.MockTransport(flaky)) as c:
        c.submit("fp", b"v", idempotency_key="k")  # the key makes a replay harmless
        assert len(calls) == 2
        calls.clear()
        with pytest.raises(httpx.ConnectError):
            c.submit("fp", b"v")  # without one, a retry could make a second job


def test_events_and_waiting_against_the_server(client, server):
    with api.Client(server.url) as c:
        job, created = c.submit("fp", videos.clip("mp4"), filename="a.mp4", steps=2, frames=12)
        assert created and job.task == "fp"
        events: list[api.JobEvent] = []
        done = c.wait(job.id, events.append, timeout=60)
        assert done.status == "completed" and done.seconds_running is not None
        assert events[-1].kind == "status" and events[-1].done
        assert [e.num_steps for e in events if e.step] and events[-1].num_steps == 4
        result = c.result(job.id)
        assert result.media_type == "video/mp4" and result.seed == done.seed
        assert any(j.id == job.id for j in c.iter_jobs())
        with pytest.raises(api.Conflict):
            c.cancel(job.id)
        with pytest.raises(api.InvalidInput, match="frames"):
            c.submit("opc", videos.clip("mp4"), frames=20)


def test_a_frame_step_is_passed_and_reported(server):
    with api.Client(server.url) as c:
        job, _ = c.submit("opc", videos.clip("mp4", frames=16), steps=1, frame_step=2)
        done = c.wait(job.id, timeout=60)
        assert done.frame_step == 2 and done.frame_rate == 4.0  # an 8 fps clip read at 2
        result = c.result(job.id)
        assert result.frame_step == 2 and result.frame_rate == 4.0
        cg = c.wait(c.submit("cg", class_id=1, steps=1).job.id, timeout=60)
        assert cg.frame_step is None and cg.frame_rate == 8.0
        with pytest.raises(api.InvalidInput, match="frame_step"):
            c.submit("opc", videos.clip("mp4"), frame_step=99)


def test_the_client_loads_neither_torch_nor_fastapi():
    code = (
        "import sys\n"
        "import service.client\n"
        "heavy = {'torch', 'fastapi', 'numpy', 'av'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_durations_never_read_below_zero():
    from service.client import Job

    body = {
        "id": "j",
        "url": "/v1/jobs/j",
        "task": "cg",
        "status": "completed",
        "progress": 100.0,
        "attempts": 1,
        "created_at": "2026-12-02T10:00:00.003Z",
        "started_at": "2026-12-02T10:00:00.001Z",
        "finished_at": "2026-12-02T10:00:02.001Z",
        "error": None,
        "error_type": None,
        "seed": 1,
        "format": "mp4",
        "result_url": None,
    }
    job = Job.from_json(body)  # a server from before frame steps: none reported
    assert job.frame_step is None and job.frame_rate is None
    assert job.seconds_queued == 0.0  # claimed at once, the readings 2 ms apart the other way
    assert job.seconds_running == pytest.approx(2.0)
