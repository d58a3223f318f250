"""Uploads read at the model's frame rate (one frame in `frame_step`), results written at the
rate read: a tiny model that learnt motion at 4 fps, and one whose rate is unknown."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from media import MAX_STEP, decode_video, encode_video
from media.npz import read_npz
from tests.service.conftest import Server, client_of, serving
from tests.support import videos


@pytest.fixture(scope="module")
def rated(rate_checkpoint, tmp_path_factory) -> Iterator[Server]:
    with serving(rate_checkpoint, tmp_path_factory.mktemp("rated")) as srv:
        yield srv


@pytest.fixture()
def rc(rated) -> Iterator[httpx.Client]:
    with client_of(rated) as c:
        yield c


def level(i: int) -> int:
    """The grey level of frame i of `ramp`."""
    return 16 + 9 * i


def ramp(frames: int, fps: float = 8) -> bytes:
    """A clip of flat grey frames, frame i at `level(i)`, so that a result tells which frames
    the model was given."""
    video = np.stack([np.full((32, 32, 3), level(i), np.uint8) for i in range(frames)])
    return encode_video(video, "mp4", fps)


def levels(video: np.ndarray) -> list[int]:
    """The grey level of each frame's centre (the box opc keeps, fp's condition frames)."""
    return [round(float(f[6:10, 6:10].mean())) for f in video]


def near(got: list[int], frames: list[int]) -> bool:
    if len(got) != len(frames):
        return False
    return all(abs(g - level(i)) <= 3 for g, i in zip(got, frames, strict=True))


def test_an_upload_is_read_at_the_models_rate(rc):
    r = rc.post(
        "/v1/tasks/opc",
        data={"steps": "1", "format": "npz"},
        files={"video": ("a.mp4", ramp(16))},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-frame-step"] == "2" and r.headers["x-frame-rate"] == "4"
    assert near(levels(read_npz(r.content)), list(range(0, 16, 2)))
    r = rc.post("/v1/tasks/opc", data={"steps": "1"}, files={"video": ("a.mp4", ramp(16))})
    assert decode_video(r.content).fps == 4  # played back at the rate it was read at
    twelve = rc.post(
        "/v1/tasks/opc",
        data={"steps": "1", "format": "npz"},
        files={"video": ("a.mp4", ramp(24, fps=12))},
    )
    assert twelve.headers["x-frame-step"] == "3" and twelve.headers["x-frame-rate"] == "4"
    assert near(levels(read_npz(twelve.content)), list(range(0, 24, 3)))


def test_frame_prediction_reads_strided_condition_frames(rc):
    clip = {"video": ("a.mp4", ramp(12))}
    data = {"steps": "1", "format": "npz"}
    end = read_npz(rc.post("/v1/tasks/fp", data=data, files=clip).content)
    assert near(levels(end[:3]), [7, 9, 11])  # the last frame and every second before it
    r = rc.post("/v1/tasks/fp", data=data | {"start": "2"}, files=clip)
    assert near(levels(read_npz(r.content)[:3]), [2, 4, 6])  # `start` counts the clip's frames
    r = rc.post("/v1/tasks/fp", data=data | {"frame_step": "3"}, files=clip)
    assert r.headers["x-frame-step"] == "3" and r.headers["x-frame-rate"] == "2.66667"
    assert near(levels(read_npz(r.content)[:3]), [5, 8, 11])
    long = rc.post("/v1/tasks/fp", data=data | {"frames": "20"}, files=clip)
    assert long.status_code == 200 and read_npz(long.content).shape[0] == 20
    assert rc.post("/v1/tasks/fp", data=data | {"start": "7"}, files=clip).status_code == 200
    r = rc.post("/v1/tasks/fp", data=data | {"start": "8"}, files=clip)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"] == (
        "start must be in [0, 7]: the video has 12 frames and the condition takes 3 at a frame "
        "step of 2"
    )
    r = rc.post("/v1/tasks/fp", data=data, files={"video": ("a.mp4", ramp(4))})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        "task 'fp' needs at least 5 frames at a frame step of 2; the video has 4"
    )


def test_the_step_can_be_chosen(rc):
    r = rc.post(
        "/v1/tasks/opc",
        data={"steps": "1", "format": "npz", "frame_step": "1"},
        files={"video": ("a.mp4", ramp(16))},
    )
    assert r.headers["x-frame-step"] == "1" and r.headers["x-frame-rate"] == "8"
    assert near(levels(read_npz(r.content)), list(range(8)))


@pytest.mark.parametrize("value", ["0", "17", "-1", "two", "1.5"])
def test_a_step_out_of_range_is_refused(rc, value):
    for path, data in [("/v1/tasks/opc", {}), ("/v1/jobs", {"task": "opc"})]:
        r = rc.post(
            path,
            data=data | {"steps": "1", "frame_step": value},
            files={"video": ("a.mp4", ramp(16))},
        )
        assert r.status_code == 422, r.text
        assert set(r.json()["error"]) == {"type", "message"} and "frame_step" in r.text


def test_a_step_is_for_tasks_on_a_video(rc):
    r = rc.post("/v1/jobs", data={"task": "cg", "class_id": "1", "frame_step": "2"})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "frame_step is for tasks on a video, not 'cg'"
    schema = rc.get("/openapi.json").json()

    def form(path: str) -> dict:
        [body] = schema["paths"][path]["post"]["requestBody"]["content"].values()
        ref = body["schema"]["$ref"].rsplit("/", 1)[-1]
        return schema["components"]["schemas"][ref]["properties"]

    assert "frame_step" in form("/v1/tasks/opc") and "frame_step" in form("/v1/tasks/fp")
    assert "frame_step" not in form("/v1/tasks/cg")
    [step] = [f for f in form("/v1/tasks/fp")["frame_step"]["anyOf"] if f.get("type") == "integer"]
    assert step["minimum"] == 1 and step["maximum"] == MAX_STEP


def test_jobs_report_the_step_and_rate(rc, rated):
    r = rc.post(
        "/v1/jobs",
        data={"task": "opc", "steps": "1", "format": "npz"},
        files={"video": ("a.mp4", ramp(16))},
    )
    assert r.status_code == 202, r.text
    job = _finished(rc, r.json()["id"])
    assert job["frame_step"] == 2 and job["frame_rate"] == 4.0
    stored = rated.app.state.magvit.queue.get(job["id"]).spec
    assert stored.frame_step == 2 and stored.frame_rate == 4.0
    cg = _finished(
        rc, rc.post("/v1/jobs", data={"task": "cg", "class_id": "1", "steps": "1"}).json()["id"]
    )
    assert cg["frame_step"] is None and cg["frame_rate"] == 4.0  # the model's rate
    result = rc.get(f"/v1/jobs/{cg['id']}/result")
    assert "x-frame-step" not in result.headers and decode_video(result.content).fps == 4
    assert rc.get("/v1/tasks").json()["frame_rate"] == 4.0


def test_a_model_without_a_rate_reads_every_frame(client):
    r = client.post(
        "/v1/tasks/opc",
        data={"steps": "1", "format": "npz"},
        files={"video": ("a.mp4", ramp(16))},
    )
    assert r.headers["x-frame-step"] == "1" and r.headers["x-frame-rate"] == "8"
    assert near(levels(read_npz(r.content)), list(range(8)))
    r = client.post("/v1/tasks/opc", data={"steps": "1"}, files={"video": ("a.mp4", ramp(16, 12))})
    assert r.headers["x-frame-step"] == "1" and decode_video(r.content).fps == 12  # as uploaded
    r = client.post("/v1/tasks/cg", data={"steps": "1", "class_id": "1"})
    assert r.headers["x-frame-rate"] == "8" and decode_video(r.content).fps == 8
    assert client.get("/v1/tasks").json()["frame_rate"] is None


def test_a_declared_rate_past_what_formats_play_is_bounded(client):
    clip = videos.encode_with(videos.moving_bar(10), "mp4", "libx264", fps=240)
    r = client.post(
        "/v1/tasks/opc", data={"steps": "1", "format": "gif"}, files={"video": ("a.mp4", clip)}
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-frame-rate"] == "60"


def _finished(client: httpx.Client, job_id: str) -> dict:
    for _ in range(600):
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            assert job["status"] == "completed", job
            return job
        time.sleep(0.05)
    raise AssertionError("the job did not finish")
