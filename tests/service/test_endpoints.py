"""Every endpoint over real HTTP, all ten tasks, jobs and their events."""

from __future__ import annotations

import json
import re

import pytest

from media import decode_video
from models.tasks import TASK_CODES, TASKS
from tests.support import videos

CLIP = videos.clip("mp4", frames=10)


def _files(code: str) -> dict:
    return {"video": ("clip.mp4", CLIP, "video/mp4")} if TASKS[code].needs_video else {}


def _data(code: str, **extra) -> dict:
    data = {"steps": "2", "seed": "7"} | extra
    if TASKS[code].needs_class:
        data["class_id"] = "1"
    return data


@pytest.mark.parametrize("code", TASK_CODES)
def test_every_task_answers_with_a_video(client, code):
    r = client.post(f"/v1/tasks/{code}", data=_data(code), files=_files(code))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["x-seed"] == "7"
    assert float(r.headers["x-inference-seconds"]) >= 0
    video = decode_video(r.content).frames
    assert video.shape == (8, 16, 16, 3)


def test_same_seed_same_video_and_formats(client):
    a = client.post("/v1/tasks/cg", data=_data("cg", format="npz"))
    b = client.post("/v1/tasks/cg", data=_data("cg", format="npz"))
    assert a.headers["content-type"] == "application/x-npz"
    assert a.content == b.content
    for fmt, mime in (("gif", "image/gif"), ("webm", "video/webm")):
        r = client.post("/v1/tasks/cg", data=_data("cg", format=fmt))
        assert r.status_code == 200 and r.headers["content-type"] == mime


def test_task_list_health_and_openapi(client):
    info = client.get("/v1/tasks").json()
    assert [t["code"] for t in info["tasks"]] == list(TASK_CODES)
    assert info["video_shape"] == [8, 16, 16]
    assert info["class_names"][3] == "scene 3" and len(info["class_names"]) == info["num_classes"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    schema = client.get("/openapi.json").json()
    ops = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {f"run_{c}" for c in TASK_CODES} <= ops


def test_job_lifecycle_with_events_and_idempotency(client):
    headers = {"Idempotency-Key": "abc-1"}
    r = client.post(
        "/v1/jobs", data=_data("fp", task="fp", preview="true"), files=_files("fp"), headers=headers
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"].endswith(f"/v1/jobs/{job['id']}")
    again = client.post(
        "/v1/jobs", data=_data("fp", task="fp", preview="true"), files=_files("fp"), headers=headers
    )
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    for changed in ({"preview": "false"}, {"steps": "3"}, {"seed": "8"}):
        other = client.post(
            "/v1/jobs",
            data=_data("fp", task="fp", preview="true") | changed,
            files=_files("fp"),
            headers=headers,
        )
        assert other.status_code == 422, (changed, other.text)
        assert "Idempotency-Key" in other.json()["error"]["message"]
    events = []
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", params={"preview": 1}) as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "completed"
    assert events[-1]["progress"] == 100
    status = client.get(f"/v1/jobs/{job['id']}").json()
    assert status["status"] == "completed" and status["result_url"]
    result = client.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200 and len(result.content) > 100
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 409


def test_unknown_jobs_and_routes(client):
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/result", "/v1/jobs/nope/events", "/v1/nothing"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.put("/v1/tasks/fp")
    assert r.status_code == 405 and "error" in r.json()


def test_metrics_show_requests_and_batches(client):
    body = client.get("/metrics").text
    for name in (
        "magvit_requests_total",
        "magvit_queue_depth",
        "magvit_queue_wait_seconds",
        "magvit_inference_seconds",
        "magvit_batch_size",
        "magvit_video_decode_seconds",
        "magvit_video_encode_seconds",
    ):
        assert name in body
    depth = re.search(r"^magvit_queue_depth (\S+)$", body, re.M)
    assert depth and float(depth.group(1)) >= 0
    assert re.search(r'magvit_requests_total\{status="200",task="cg"\} [1-9]', body)


def test_the_openapi_document_matches_the_api(server, client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]

    def form(path: str) -> dict:
        [body] = paths[path]["post"]["requestBody"]["content"].values()
        ref = body["schema"]["$ref"].rsplit("/", 1)[-1]
        return schema["components"]["schemas"][ref]["properties"]

    assert form("/v1/tasks/cg")["steps"]["maximum"] == server.settings.max_steps
    assert "class_id" in form("/v1/tasks/cg") and "class_id" not in form("/v1/tasks/fp")
    assert "guidance_scale" not in form("/v1/tasks/fp") and "video" in form("/v1/tasks/fp")
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, methods in paths.items():
        for method, op in methods.items():
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert answer["content"]["application/json"]["schema"] == error, (
                        path,
                        method,
                        code,
                    )
    assert {"400", "404", "413", "415", "422", "429", "503"} <= set(
        paths["/v1/tasks/fp"]["post"]["responses"]
    )
    assert {"401", "404", "503"} <= set(paths["/v1/jobs/{job_id}"]["get"]["responses"])


def test_schedule_and_nucleus_sampling_reach_the_job_record(client, server):
    bad = client.post("/v1/jobs", data={"task": "cg", "class_id": "1", "schedule": "spiral"})
    assert bad.status_code == 422 and bad.json()["error"]["type"]
    r = client.post(
        "/v1/jobs",
        data={
            "task": "cg",
            "class_id": "1",
            "steps": "2",
            "schedule": "exp",
            "top_p": "0.9",
            "top_k": "5",
        },
    )
    assert r.status_code == 202, r.text
    job = server.app.state.magvit.queue.get(r.json()["id"])
    assert job is not None
    options = job.spec.options
    assert (options.schedule, options.top_p, options.top_k) == ("exp", 0.9, 5)
    ok = client.post(
        "/v1/tasks/fp", data=_data("fp", schedule="pow2", top_p="0.5"), files=_files("fp")
    )
    assert ok.status_code == 200, ok.text
