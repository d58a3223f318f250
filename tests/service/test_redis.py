"""The Redis Streams backend against a real Redis server, and API replicas with separate
worker processes: spread, takeover after SIGKILL, dead letters, reconnection after a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.jobs import ErrorType
from service.redis_queue import RedisQueue
from tests.service.conftest import Server, free_port, make_settings, spec
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SPEC = spec(format="npz")


@pytest.fixture()
def url(redis_server) -> str:
    RedisQueue(redis_server.url).r.flushall()
    return redis_server.url


def test_replicas_share_jobs_idempotency_and_cancellation(url):
    api_a, api_b = RedisQueue(url), RedisQueue(url)
    worker = RedisQueue(url, consumer="w1")
    job, created = api_a.enqueue(SPEC, idempotency_key="k1")
    again, created_again = api_b.enqueue(SPEC, idempotency_key="k1")
    assert created and not created_again and again.id == job.id
    assert api_b.depth() == 1

    api_a.put_input(job.id, b"frames")
    [claimed] = worker.claim_batch(4, 0.0, lease_s=30, block_s=0.1)
    assert claimed.id == job.id and worker.get_input(job.id) == b"frames"
    seen = api_b.get(job.id)
    assert seen.status == "in_progress" and seen.worker == "w1" and seen.attempts == 1
    worker.set_progress(job.id, 1, 2)
    assert api_a.get(job.id).progress == 50.0
    worker.put_result(job.id, b"video")
    worker.complete(job.id, "npz")
    done = api_b.get(job.id)
    assert done.status == "completed" and done.progress == 100
    assert api_a.get_result(job.id) == b"video"
    assert api_a.get_input(job.id) is None  # inputs go once the job is done
    stats = api_a.stats()
    assert stats["pending"] == 0 and stats["depth"] == 0

    # Cancelled on one replica before any worker read it: workers skip it.
    gone, _ = api_a.enqueue(SPEC)
    assert api_b.cancel(gone.id).status == "cancelled"
    assert worker.claim_batch(4, 0.0, 30, 0.1) == []
    assert api_a.get(gone.id).status == "cancelled" and api_a.depth() == 0


def test_frame_steps_are_stored_and_older_records_load(url):
    api, worker = RedisQueue(url), RedisQueue(url, consumer="w1")
    stepped, _ = api.enqueue(spec("opc", format="npz", frame_step=3, frame_rate=10.0))
    assert worker.get(stepped.id).spec == stepped.spec
    [claimed] = worker.claim_batch(4, 0.0, lease_s=30, block_s=0.1)
    assert claimed.spec.frame_step == 3 and claimed.spec.frame_rate == 10.0
    old, _ = api.enqueue(spec("opc", format="npz"))
    params = json.loads(old.spec.to_json())
    del params["frame_step"], params["frame_rate"]
    api.r.hset(api._k("job", old.id), "params", json.dumps(params))
    legacy = worker.get(old.id).spec
    assert legacy.frame_step is None and legacy.frame_rate == 8.0


def test_batches_hold_one_key_and_keep_the_rest(url):
    api, worker = RedisQueue(url), RedisQueue(url, consumer="w1")
    other = spec(format="npz", steps=3)
    ids = [api.enqueue(s)[0].id for s in (SPEC, other, SPEC)]
    first = worker.claim_batch(4, 0.0, 30, 0.1)
    second = worker.claim_batch(4, 0.0, 30, 0.1)  # from the worker's buffer, not the stream
    assert [j.id for j in first] == [ids[0], ids[2]] and [j.id for j in second] == [ids[1]]


def test_a_stopped_workers_jobs_are_taken_over_then_dead_lettered(url):
    api = RedisQueue(url, max_attempts=2)
    job, _ = api.enqueue(SPEC)
    # Worker 1 claims and dies (never renews, never acks): after the lease, worker 2 takes over.
    assert RedisQueue(url, max_attempts=2, consumer="w1").claim_batch(1, 0.0, 0.2, 0.1)
    time.sleep(0.3)
    w2 = RedisQueue(url, max_attempts=2, consumer="w2")
    [again] = w2.claim_batch(1, 0.0, 0.2, 0.1)
    assert again.id == job.id and again.attempts == 2 and again.worker == "w2"
    assert api.stats()["redeliveries"] == 1
    # Worker 2 dies too: the job has used its attempts and goes to the dead-letter stream.
    time.sleep(0.3)
    assert RedisQueue(url, max_attempts=2, consumer="w3").claim_batch(1, 0.0, 0.2, 0.1) == []
    dead = api.get(job.id)
    assert dead.status == "failed" and "dead-lettered" in dead.error
    assert api.dead_letters()[0]["id"] == job.id and api.stats()["dead_letters"] == 1
    assert api.stats()["pending"] == 0


def test_renewed_claims_are_not_taken_over(url):
    api = RedisQueue(url)
    job, _ = api.enqueue(SPEC)
    w1 = RedisQueue(url, consumer="w1")
    assert w1.claim_batch(1, 0.0, 0.3, 0.1)
    for _ in range(3):
        time.sleep(0.15)
        w1.renew([job.id], 0.3)
    assert RedisQueue(url, consumer="w2").claim_batch(1, 0.0, 0.3, 0.05) == []
    # Shutdown gives the job back at once, the attempt not counted.
    w1.release([job.id])
    [back] = RedisQueue(url, consumer="w2").claim_batch(1, 0.0, 0.3, 0.1)
    assert back.id == job.id and back.attempts == 1


# ------------------------------------------------------------------ API + worker processes
def _start_worker(
    url: str, checkpoint: Path, name: str, log: Path, metrics_port: int = 0
) -> subprocess.Popen:
    env = os.environ | {"MAGVIT_JOB_MAX_ATTEMPTS": "3", "MAGVIT_WORKER_NAME": name}
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "worker",
        "--queue",
        url,
        "--checkpoint",
        str(checkpoint),
        "--device",
        "cpu",
        "--metrics-port",
        str(metrics_port),
        "--lease-seconds",
        "2",
        "--max-batch-size",
        "2",
        "--max-wait-ms",
        "20",
    ]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _ready(log: Path) -> bool:
    return log.is_file() and b" ready on " in log.read_bytes()


@pytest.mark.integration
def test_api_replica_and_two_workers(url, redis_server, tiny_checkpoint, tmp_path):
    q = RedisQueue(url)
    api = Server(make_settings(tiny_checkpoint, tmp_path / "api", queue_url=url, workers=0)).start()
    workers = [_start_worker(url, tiny_checkpoint, f"w{i}", tmp_path / f"w{i}.log") for i in (1, 2)]
    try:
        _wait_for(lambda: all(_ready(tmp_path / f"w{i}.log") for i in (1, 2)), 120, "workers")
        with httpx.Client(base_url=api.url, timeout=60) as c:

            def submit(n: int, steps: int) -> list[str]:
                return [
                    c.post(
                        "/v1/jobs",
                        data={
                            "task": "cg",
                            "class_id": str(i % 3),
                            "seed": str(i),
                            "steps": str(steps),
                            "format": "npz",
                        },
                    ).json()["id"]
                    for i in range(n)
                ]

            def finish(ids: list[str]) -> list[dict]:
                return [
                    _wait_for(
                        lambda i=i: (
                            (j := c.get(f"/v1/jobs/{i}").json())["status"]
                            in ("completed", "failed", "cancelled")
                            and j
                        ),
                        120,
                        i,
                    )
                    for i in ids
                ]

            # Jobs spread over both workers.
            ids = submit(8, 2)
            assert [j["status"] for j in finish(ids)] == ["completed"] * 8
            assert {q.get(i).worker.split("-")[0] for i in ids} == {"w1", "w2"}
            results = {i: c.get(f"/v1/jobs/{i}/result").content for i in ids}
            assert all(results.values())

            # A worker killed in the middle of a job: every accepted job still completes.
            ids = submit(6, 48)
            victim = _wait_for(
                lambda: next(
                    (q.get(i).worker for i in ids if q.get(i).status == "in_progress"), None
                ),
                60,
                "a running job",
            )
            pid = int(victim.rsplit("-", 1)[1])
            os.kill(pid, signal.SIGKILL)
            done = finish(ids)
            assert [j["status"] for j in done] == ["completed"] * 6
            assert all(c.get(f"/v1/jobs/{i}/result").status_code == 200 for i in ids)
            assert q.stats()["redeliveries"] >= 1 and q.stats()["pending"] == 0
            metrics = c.get("/metrics").text
            assert "magvit_queue_redeliveries" in metrics and "magvit_queue_lag" in metrics

            # Redis restarted while idle: the API and the surviving worker reconnect.
            redis_server.stop()
            redis_server.start()
            [job_id] = _wait_for(lambda: _try(lambda: submit(1, 2)), 30, "the API to reconnect")
            assert finish([job_id])[0]["status"] == "completed"
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        api.stop()


def _try(fn):
    try:
        return fn()
    except Exception:
        return None


@pytest.mark.integration
def test_a_redis_outage_answers_503_and_recovers(tiny_checkpoint, tmp_path):
    private = RedisServer().start()
    api = Server(make_settings(tiny_checkpoint, tmp_path, queue_url=private.url, workers=0)).start()
    try:
        data = {"task": "cg", "class_id": "1", "steps": "1"}
        assert httpx.post(f"{api.url}/v1/jobs", data=data).status_code == 202
        private.stop()
        start = time.monotonic()
        r = httpx.post(f"{api.url}/v1/jobs", data=data, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"], r.text
        assert r.json()["error"]["type"] == "unavailable"
        assert httpx.get(f"{api.url}/v1/jobs/x", timeout=30).status_code == 503
        assert time.monotonic() - start < 8
        # The event loop stays free while queue calls fail: liveness answers at once.
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            slow = [pool.submit(httpx.get, f"{api.url}/v1/jobs/x", timeout=30) for _ in range(3)]
            t0 = time.monotonic()
            assert httpx.get(f"{api.url}/healthz", timeout=5).status_code == 200
            assert time.monotonic() - t0 < 0.5
            assert all(f.result().status_code == 503 for f in slow)
        assert httpx.get(f"{api.url}/readyz", timeout=30).status_code == 503
        private.start()  # the same port: the API reconnects by itself
        _wait_for(
            lambda: httpx.post(f"{api.url}/v1/jobs", data=data, timeout=30).status_code == 202,
            30,
            "recovery",
        )
        assert httpx.get(f"{api.url}/readyz", timeout=30).status_code == 200
    finally:
        api.stop()
        private.stop()


def test_persistence_is_checked_at_start_up(redis_server, tiny_checkpoint, tmp_path, caplog):
    from service.app import create_app
    from service.runtime import QueueNotDurable

    settings = make_settings(tiny_checkpoint, tmp_path, queue_url=redis_server.url, workers=0)
    with caplog.at_level("WARNING"):
        create_app(settings)
    assert "no persistence" in caplog.text
    strict = settings.model_copy(update={"require_durable_queue": True})
    with pytest.raises(QueueNotDurable):
        create_app(strict)


def test_idempotency_keys_are_per_owner_and_per_request(url):
    from service.queue import IdempotencyConflict

    q = RedisQueue(url)
    mine = spec(format="npz", owner="a", fingerprint="f1")
    job, created = q.enqueue(mine, idempotency_key="k")
    again, created_again = q.enqueue(mine, idempotency_key="k")
    assert created and not created_again and again.id == job.id
    theirs, created_theirs = q.enqueue(
        spec(format="npz", owner="b", fingerprint="f1"), idempotency_key="k"
    )
    assert created_theirs and theirs.id != job.id and q.get(theirs.id).spec.owner == "b"
    with pytest.raises(IdempotencyConflict):
        q.enqueue(spec(format="npz", owner="a", fingerprint="f2"), idempotency_key="k")
    assert q.find("a", "k").id == job.id and q.find("c", "k") is None
    q.cancel(theirs.id)
    assert q.counts() == {
        "queued": 1,
        "in_progress": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
    }
    assert q.get(theirs.id).error_type is ErrorType.CANCELLED


def test_worker_metrics_listen_on_loopback_only(url, tiny_checkpoint, tmp_path):
    port = free_port()
    worker = _start_worker(url, tiny_checkpoint, "wm", tmp_path / "wm.log", metrics_port=port)
    try:
        _wait_for(lambda: _ready(tmp_path / "wm.log"), 120, "the worker")
        assert "magvit_" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        # Bound to 127.0.0.1, not to every interface: another address of this host is refused
        # (a listener on 0.0.0.0 would answer on 127.0.0.2 too).
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.2:{port}/metrics", timeout=5)
    finally:
        worker.terminate()
        worker.wait(30)
