"""One bad request fails alone: validated before it is queued, checked again before it runs,
and a job the engine still rejects does not take its batch with it."""

from __future__ import annotations

import time

import httpx

from media.npz import write_npz
from service.jobs import ErrorType
from tests.service.conftest import spec
from tests.support import videos


def test_class_id_on_a_task_without_classes_is_checked_up_front(client):
    r = client.post(
        "/v1/jobs",
        data={"task": "fp", "steps": "1", "class_id": "999"},
        files={"video": ("a.mp4", videos.clip("mp4"))},
    )
    assert r.status_code == 422 and "class_id" in r.json()["error"]["message"]


def _wait(queue, ids, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [queue.get(i) for i in ids]
        if all(j.done for j in jobs):
            return jobs
        time.sleep(0.05)
    raise AssertionError("jobs did not finish")


class Picky:
    """The engine, refusing any batch that holds seed 666 (as the model may refuse inputs that
    no check before it catches)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.batches: list[int] = []

    def run(self, requests, options, on_step=None, preview=False, frames=None):
        from models.tasks import Task
        from service.engine import InvalidInput

        self.batches.append(len(requests))
        # The scheduler resolves the job's task once and hands the engine the Task itself.
        assert all(isinstance(r.task, Task) for r in requests)
        if any(r.seed == 666 for r in requests):
            raise InvalidInput("seed 666 is refused")
        return self.engine.run(requests, options, on_step, preview, frames)


def test_a_bad_job_fails_alone_in_its_batch(server, monkeypatch):
    st = server.app.state.magvit
    queue = st.queue
    picky = Picky(st.scheduler.engine)
    monkeypatch.setattr(st.scheduler, "engine", picky)
    frames = write_npz(videos.moving_bar(10, 32, 32))
    good = spec("fp", steps=1, class_id=None, format="npz")
    cases = [
        (good, frames, "ok"),
        # queued by an older server that did not check class ids
        (spec("fp", steps=1, class_id=999, format="npz"), frames, ErrorType.INVALID_INPUT),
        (good, b"not an npz", ErrorType.INVALID_INPUT),  # a stored input that is unreadable
        (spec("fp", steps=1, class_id=None, format="npz", seed=666), frames, "refused"),
        (good, frames, "ok"),
    ]
    ids = []
    for n, (job_spec, data, _) in enumerate(cases):
        job_id = f"batch{n}x{time.monotonic_ns()}"
        queue.put_input(job_id, data)
        queue.enqueue(job_spec, job_id=job_id)
        ids.append(job_id)
    st.scheduler.notify()
    for job, (_, _, kind) in zip(_wait(queue, ids), cases, strict=True):
        if kind == "ok":
            assert job.status == "completed", job
        else:
            assert job.status == "failed" and job.error_type is ErrorType.INVALID_INPUT, job
            assert job.error.startswith("invalid input")
    assert max(picky.batches) > 1  # they did share a batch


def test_sync_failures_map_by_error_type(server):
    """A failed job answers its synchronous request by its error type, not by its text."""
    from service.jobs import Job
    from service.routes import _failure

    job = Job("x", spec(), status="failed", error="whatever", error_type=ErrorType.INVALID_INPUT)
    assert _failure(job).status == 422
    job.error_type = ErrorType.DEAD_LETTER
    assert _failure(job).status == 503
    assert httpx.get(f"{server.url}/healthz").status_code == 200
