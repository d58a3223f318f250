"""Readiness, request timeouts, result expiry and draining."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from service.scheduler import Scheduler
from service.sqlite_queue import SqliteQueue
from tests.service.conftest import Server, make_settings, spec

SPEC = spec(class_id=0, steps=1)


def test_not_ready_when_the_model_cannot_load(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    (broken / "tokenizer.safetensors").write_bytes(b"not weights")
    srv = Server(make_settings(broken, tmp_path / "data")).start(ready=False)
    try:
        time.sleep(0.5)
        r = httpx.get(f"{srv.url}/readyz")
        message = r.json()["error"]["message"]
        assert r.status_code == 503 and "failed to load" in message
        assert str(tmp_path) not in message and "Error" not in message  # no paths, no classes
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
        start = time.monotonic()  # work is refused at once, not held until it times out
        r = httpx.post(f"{srv.url}/v1/tasks/cg", data={"class_id": "1", "steps": "1"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable"
        assert time.monotonic() - start < 2
    finally:
        srv.stop()


def test_synchronous_request_times_out_with_503(tiny_checkpoint, tmp_path):
    # No workers: nothing will run the job, so the request must give up on time.
    srv = Server(make_settings(tiny_checkpoint, tmp_path, workers=0, request_timeout_s=0.5)).start()
    try:
        start = time.monotonic()
        r = httpx.post(f"{srv.url}/v1/tasks/cg", data={"class_id": "1"}, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert time.monotonic() - start < 5
        counts = SqliteQueue(tmp_path / "jobs.sqlite3").counts()
        assert counts["cancelled"] == 1 and counts["queued"] == 0
        assert _error_types(tmp_path) == ["timeout"]
    finally:
        srv.stop()


def _error_types(data_dir) -> list[str]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(data_dir / "jobs.sqlite3")) as db:
        return [r[0] for r in db.execute("SELECT error_type FROM jobs ORDER BY created_at")]


def test_a_synchronous_request_whose_client_left_is_cancelled(tiny_checkpoint, tmp_path):
    srv = Server(make_settings(tiny_checkpoint, tmp_path, workers=0)).start()
    try:
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(f"{srv.url}/v1/tasks/cg", data={"class_id": "1"}, timeout=0.5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _error_types(tmp_path) != ["cancelled"]:
            time.sleep(0.05)
        assert _error_types(tmp_path) == ["cancelled"]
    finally:
        srv.stop()


def test_results_expire(tiny_checkpoint, tmp_path):
    settings = make_settings(tiny_checkpoint, tmp_path, result_ttl_s=0.01)
    queue = SqliteQueue(tmp_path / "jobs.sqlite3")
    job, _ = queue.enqueue(SPEC)
    queue.claim(1, 60)
    queue.put_result(job.id, b"video")
    queue.complete(job.id, "mp4")
    assert queue.get_result(job.id) == b"video"

    async def janitor_once():
        scheduler = Scheduler(queue, None, settings, _metrics())
        task = asyncio.create_task(scheduler._janitor())
        await asyncio.sleep(0.2)
        scheduler.stopping = True
        task.cancel()

    time.sleep(0.05)
    asyncio.run(janitor_once())
    assert queue.get_result(job.id) is None and queue.get(job.id) is None


def test_shutdown_gives_unfinished_jobs_back(tmp_path):
    queue = SqliteQueue(tmp_path / "q.sqlite3")
    job, _ = queue.enqueue(SPEC)
    claimed = queue.claim(1, 60)
    assert claimed and queue.get(job.id).status == "in_progress"

    async def stop_with_running_job():
        scheduler = Scheduler(
            queue, None, make_settings(tmp_path, tmp_path, drain_timeout_s=0.1), _metrics()
        )
        scheduler._running.add(job.id)  # a batch that will not finish within the drain timeout
        await scheduler.stop()

    asyncio.run(stop_with_running_job())
    again = queue.get(job.id)
    assert again.status == "queued" and again.attempts == 0


def _metrics():
    from service.metrics import Metrics

    return Metrics()


def test_a_killed_servers_running_jobs_run_again_at_once(tmp_path):
    """SQLite: a job claimed by a process of this host that is gone is claimable at restart,
    without waiting out its lease."""
    import os
    import socket
    import subprocess

    queue = SqliteQueue(tmp_path / "q.sqlite3")
    job, _ = queue.enqueue(SPEC)
    gone = subprocess.Popen(["true"])  # a pid that has exited
    gone.wait()
    queue.worker = f"{os.environ.get('MAGVIT_WORKER_NAME') or socket.gethostname()}-{gone.pid}"
    assert queue.claim(1, lease_s=3600)
    queue.close()
    restarted = SqliteQueue(tmp_path / "q.sqlite3")
    [again] = restarted.claim_batch(4, 0.0, lease_s=60)
    assert again.id == job.id and again.attempts == 2


def test_readiness_fails_at_once_when_stopping(tiny_checkpoint, tmp_path):
    srv = Server(make_settings(tiny_checkpoint, tmp_path, workers=0)).start()
    try:
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
        srv.app.state.magvit.scheduler.begin_stop()
        r = httpx.get(f"{srv.url}/readyz")
        assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable"
        r = httpx.post(f"{srv.url}/v1/jobs", data={"task": "cg", "class_id": "1"})
        assert r.status_code == 503 and r.headers["retry-after"]
    finally:
        srv.stop()


@pytest.mark.integration
def test_sigterm_answers_waiting_clients_and_stops_within_the_drain_timeout(
    tiny_checkpoint, tmp_path
):
    import concurrent.futures
    import os
    import signal
    import subprocess
    import sys

    from tests.service.conftest import free_port

    port = free_port()
    env = os.environ | {"MAGVIT_DRAIN_TIMEOUT_S": "2", "MAGVIT_WARMUP": "false"}
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "serve",
        "--checkpoint",
        str(tiny_checkpoint),
        "--workers",
        "0",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # No engine: the synchronous request waits until the server stops.
            waiting = pool.submit(
                httpx.post, f"{url}/v1/tasks/cg", data={"class_id": "1"}, timeout=30
            )
            time.sleep(0.5)
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            r = waiting.result(timeout=10)
        assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable"
        assert time.monotonic() - start < 1.5
        proc.wait(timeout=10)
        assert time.monotonic() - start < 2 + 1.5  # the drain timeout and a little
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_api_only_process_does_not_load_the_engine(tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, asyncio\n"
        "from pathlib import Path\n"
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        f"app = create_app(Settings(checkpoint=Path({str(tiny_checkpoint)!r}), workers=0,"
        f" data_dir=Path({str(tmp_path)!r})))\n"
        "async def main():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        await asyncio.sleep(0.2)\n"
        "asyncio.run(main())\n"
        "assert 'service.engine' not in sys.modules, 'the engine was imported'\n"
        "assert 'models.pipeline' not in sys.modules, 'the pipeline was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
