"""Long videos (`frames`, the model's window slid along) and frame prediction from the end of
the uploaded clip (or from `start`)."""

from __future__ import annotations

import json

import numpy as np

from media import decode_video, encode_video
from media.npz import read_npz
from models.pipeline import window_count
from tests.support import videos


def _dark_then_bright(frames: int = 10) -> bytes:
    """A clip of dark frames whose last frame is white."""
    video = np.full((frames, 32, 32, 3), 20, np.uint8)
    video[-1] = 235
    return encode_video(video, "mp4")


def test_forty_eight_frames(client, server):
    r = client.post(
        "/v1/tasks/fp",
        data={"steps": "1", "seed": "3", "frames": "48", "format": "npz"},
        files={"video": ("a.mp4", videos.clip("mp4", frames=10))},
    )
    assert r.status_code == 200, r.text
    assert read_npz(r.content).shape == (48, 16, 16, 3)
    r = client.post(
        "/v1/tasks/cfp",
        data={"steps": "1", "class_id": "2", "frames": "20"},
        files={"video": ("a.mp4", videos.clip("mp4", frames=10))},
    )
    assert r.status_code == 200 and decode_video(r.content).frames.shape[0] == 20


def test_prediction_continues_after_the_clip(client):
    clip = _dark_then_bright()
    data = {"steps": "1", "seed": "1", "format": "npz"}
    files = {"video": ("a.mp4", clip)}
    end = read_npz(client.post("/v1/tasks/fp", data=data, files=files).content)
    assert end[0].mean() > 200  # the result begins with the clip's last frame
    first = read_npz(client.post("/v1/tasks/fp", data=data | {"start": "0"}, files=files).content)
    assert first[0].mean() < 60  # ... or with the frame `start` names
    r = client.post("/v1/tasks/fp", data=data | {"start": "9"}, files=files)
    assert r.status_code == 200 and read_npz(r.content)[0].mean() > 200
    r = client.post("/v1/tasks/fp", data=data | {"start": "10"}, files=files)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"] == (
        "start must be in [0, 9]: the video has 10 frames and the condition takes 1"
    )


def test_frames_and_start_are_checked(client, server):
    clip = {"video": ("a.mp4", videos.clip("mp4", frames=10))}
    limit = server.settings.max_output_frames
    cases = [
        ("/v1/tasks/fp", {"frames": str(limit + 1)}, "frames"),
        ("/v1/tasks/fp", {"frames": "1"}, "frames must be in [2, 128]"),
        ("/v1/jobs", {"task": "opc", "frames": "20"}, "frames is for frame prediction"),
        ("/v1/jobs", {"task": "opc", "start": "2"}, "start is for frame prediction"),
        ("/v1/tasks/fp", {"start": "-1"}, "start"),
        ("/v1/tasks/fp", {"start": "5000"}, "start must be at most"),
    ]
    for path, data, message in cases:
        r = client.post(path, data={"steps": "1"} | data, files=clip)
        assert r.status_code == 422, (data, r.text)
        assert message in r.json()["error"]["message"], (data, r.text)
    schema = client.get("/openapi.json").json()

    def form(path: str) -> dict:
        [body] = schema["paths"][path]["post"]["requestBody"]["content"].values()
        ref = body["schema"]["$ref"].rsplit("/", 1)[-1]
        return schema["components"]["schemas"][ref]["properties"]

    assert {"frames", "start"} <= set(form("/v1/tasks/fp")) and "class_id" in form("/v1/tasks/cfp")
    assert "frames" not in form("/v1/tasks/opc") and "start" not in form("/v1/tasks/cg")
    [frames] = [f for f in form("/v1/tasks/fp")["frames"]["anyOf"] if f.get("type") == "integer"]
    assert frames["maximum"] == limit


def test_progress_counts_every_window(client, server):
    config = server.app.state.magvit.config
    r = client.post(
        "/v1/jobs",
        data={"task": "fp", "steps": "2", "frames": "20", "format": "npz"},
        files={"video": ("a.mp4", videos.clip("mp4", frames=10))},
    )
    assert r.status_code == 202, r.text
    job = r.json()
    events = []
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "completed"
    total = window_count(config, 20) * 2
    assert total == 6 and events[-1]["num_steps"] == total and events[-1]["step"] == total
    stored = server.app.state.magvit.queue.get(job["id"])
    assert stored.spec.frames == 20
    assert read_npz(client.get(f"/v1/jobs/{job['id']}/result").content).shape[0] == 20
