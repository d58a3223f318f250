"""Jobs survive restarts, leases expire, the queue bounds itself, requests are batched."""

from __future__ import annotations

import concurrent.futures
import json
import re
import time

import httpx

from media import decode_video
from service.jobs import ErrorType
from service.sqlite_queue import SqliteQueue
from tests.service.conftest import Server, make_settings, spec
from tests.support import videos

CLIP = videos.clip("mp4", frames=10)


def _wait_done(client: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_jobs_survive_a_restart(tiny_checkpoint, tmp_path):
    api = Server(make_settings(tiny_checkpoint, tmp_path, workers=0)).start()
    with httpx.Client(base_url=api.url, timeout=30) as c:
        fp = c.post(
            "/v1/jobs", data={"task": "fp", "steps": "2"}, files={"video": ("a.mp4", CLIP)}
        ).json()
        cg = c.post("/v1/jobs", data={"task": "cg", "class_id": "2", "steps": "2"}).json()
        gone = c.post("/v1/jobs", data={"task": "cg", "class_id": "1", "steps": "2"}).json()
        assert c.delete(f"/v1/jobs/{gone['id']}").json()["status"] == "cancelled"
        assert c.get(f"/v1/jobs/{fp['id']}").json()["status"] == "queued"
    api.stop()

    # A worker that claimed a job and died: its lease expires and the job runs again.
    queue = SqliteQueue(tmp_path / "jobs.sqlite3")
    crashed, _ = queue.enqueue(spec())
    assert [j.id for j in queue.claim(10, lease_s=0.2, batch_key=spec().batch_key)]
    queue.close()
    time.sleep(0.3)

    full = Server(make_settings(tiny_checkpoint, tmp_path)).start()
    with httpx.Client(base_url=full.url, timeout=30) as c:
        for job_id in (fp["id"], cg["id"], crashed.id):
            done = _wait_done(c, job_id)
            assert done["status"] == "completed", done
        assert c.get(f"/v1/jobs/{crashed.id}").json()["attempts"] == 2
        assert c.get(f"/v1/jobs/{gone['id']}").json()["status"] == "cancelled"
        assert c.get(f"/v1/jobs/{fp['id']}/result").status_code == 200
    full.stop()


def test_the_frame_step_and_rate_survive_a_restart(rate_checkpoint, tmp_path):
    api = Server(make_settings(rate_checkpoint, tmp_path, workers=0)).start()
    with httpx.Client(base_url=api.url, timeout=30) as c:
        job = c.post(
            "/v1/jobs",
            data={"task": "opc", "steps": "1", "frame_step": "1"},
            files={"video": ("a.mp4", CLIP)},
        ).json()
    api.stop()
    queue = SqliteQueue(tmp_path / "jobs.sqlite3")
    stored = queue.get(job["id"]).spec
    assert stored.frame_step == 1 and stored.frame_rate == 8.0
    queue.close()
    full = Server(make_settings(rate_checkpoint, tmp_path)).start()
    with httpx.Client(base_url=full.url, timeout=30) as c:
        done = _wait_done(c, job["id"])
        assert done["status"] == "completed" and done["frame_step"] == 1, done
        result = c.get(f"/v1/jobs/{job['id']}/result")
        assert result.headers["x-frame-step"] == "1" and decode_video(result.content).fps == 8
    full.stop()


def test_records_stored_before_frame_steps_load(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    queue = SqliteQueue(path)
    stepped, _ = queue.enqueue(spec("opc", frame_step=3, frame_rate=10.0))
    old, _ = queue.enqueue(spec("opc"))
    params = json.loads(queue.get(old.id).spec.to_json())
    del params["frame_step"], params["frame_rate"]
    queue._db.execute("UPDATE jobs SET params = ? WHERE id = ?", (json.dumps(params), old.id))
    queue.close()
    again = SqliteQueue(path)
    assert again.get(stepped.id).spec == stepped.spec
    legacy = again.get(old.id).spec
    assert legacy.frame_step is None and legacy.frame_rate == 8.0
    again.close()


def test_dead_letter_after_max_attempts(tmp_path):
    queue = SqliteQueue(tmp_path / "q.sqlite3", max_attempts=2)
    job, _ = queue.enqueue(spec())
    for _ in range(2):
        assert queue.claim(1, lease_s=0.0)
        time.sleep(0.01)
    assert queue.claim(1, lease_s=0.0) == []
    dead = queue.get(job.id)
    assert dead.status == "failed" and "dead-lettered" in dead.error
    assert dead.error_type is ErrorType.DEAD_LETTER and queue.stats()["dead_letters"] == 1


def test_queue_full_answers_429(tiny_checkpoint, tmp_path):
    api = Server(make_settings(tiny_checkpoint, tmp_path, workers=0, max_queue=2)).start()
    with httpx.Client(base_url=api.url, timeout=30) as c:
        codes = [
            c.post("/v1/jobs", data={"task": "cg", "class_id": "0"}).status_code for _ in range(3)
        ]
        assert codes == [202, 202, 429]
        r = c.post("/v1/tasks/cg", data={"class_id": "0"})
        assert r.status_code == 429 and r.headers["retry-after"]
        assert r.json()["error"]["type"] == "queue_full"
        # The full queue is found before the upload is decoded: bytes that are no video get
        # 429, not the 415 that decoding them would give.
        r = c.post("/v1/jobs", data={"task": "fp"}, files={"video": ("x.mp4", b"not a video")})
        assert r.status_code == 429, r.text
    api.stop()


def test_concurrent_requests_are_batched(server):
    def one(seed: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post(
                "/v1/tasks/cg", data={"class_id": "1", "seed": str(seed), "steps": "3"}
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8
    metrics = httpx.get(f"{server.url}/metrics").text
    le1 = float(re.search(r'magvit_batch_size_bucket\{le="1.0"\} (\S+)', metrics).group(1))
    count = float(re.search(r"magvit_batch_size_count (\S+)", metrics).group(1))
    assert count > le1, "no batch held more than one request"
