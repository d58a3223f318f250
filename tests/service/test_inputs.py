"""Bad input gets the right 4xx with a JSON error body; never a 5xx, never a hang."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.service.conftest import Server, make_settings
from tests.support import videos


@pytest.fixture(scope="module")
def limited(tiny_checkpoint, tmp_path_factory):
    settings = make_settings(
        tiny_checkpoint,
        tmp_path_factory.mktemp("limited"),
        max_upload_bytes=2 * 1024 * 1024,
        max_video_pixels=1920 * 1080,
        max_video_seconds=60,
    )
    srv = Server(settings).start()
    yield srv
    srv.stop()


CORPUS = [
    ("empty", lambda: b"", 415),
    ("random bytes", lambda: np.random.default_rng(1).bytes(30_000), 415),
    ("truncated", videos.truncated, 415),
    ("image renamed", videos.png_image, 415),
    ("audio only", videos.audio_only, 415),
    ("too few frames", lambda: videos.clip("mp4", frames=3), 422),
    ("8K resolution", videos.huge_resolution, 413),
    ("three minutes", videos.long_clip, 413),
    ("concat script", lambda: b"ffconcat version 1.0\nfile inputs/x.npz\n", 415),
    ("hls playlist", lambda: b"#EXTM3U\n#EXTINF:1,\nfile:/etc/hostname\n#EXT-X-ENDLIST\n", 415),
]


@pytest.mark.parametrize(("name", "make", "status"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_videos(limited, name, make, status):
    start = time.monotonic()
    r = httpx.post(
        f"{limited.url}/v1/tasks/opc",
        data={"steps": "1"},
        files={"video": ("clip.mp4", make(), "video/mp4")},
        timeout=30,
    )
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["type"] and body["message"]
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    ("path", "data", "files", "status"),
    [
        ("/v1/tasks/fp", {"steps": "1"}, None, 422),  # no video: a required field is missing
        ("/v1/tasks/cg", {"steps": "1"}, None, 422),  # no class id
        ("/v1/tasks/cg", {"class_id": "99"}, None, 422),  # class id out of range
        ("/v1/tasks/cg", {"class_id": "1", "steps": "0"}, None, 422),
        ("/v1/tasks/cg", {"class_id": "1", "steps": "abc"}, None, 422),
        ("/v1/tasks/cg", {"class_id": "1", "format": "exe"}, None, 422),
        ("/v1/jobs", {"task": "cg", "class_id": "1"}, {"video": ("a.mp4", b"x")}, 400),
        ("/v1/tasks/xx", {}, None, 404),
        ("/v1/jobs", {"task": "nope"}, None, 422),
    ],
)
def test_bad_fields(limited, path, data, files, status):
    r = httpx.post(f"{limited.url}{path}", data=data, files=files, timeout=30)
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == {"type", "message"}


def test_body_limit_enforced_while_streaming(limited):
    def chunks():
        yield (
            b'--x\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n'
            b"Content-Type: video/mp4\r\n\r\n"
        )
        for _ in range(40):
            yield b"\0" * 100_000  # 4 MB in all, no Content-Length

    r = httpx.post(
        f"{limited.url}/v1/tasks/opc",
        content=chunks(),
        timeout=30,
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "too_large"
    big = videos.clip("mp4") + b"\0" * (3 * 1024 * 1024)
    r = httpx.post(f"{limited.url}/v1/tasks/opc", files={"video": ("a.mp4", big)}, timeout=30)
    assert r.status_code == 413


def test_api_keys(tiny_checkpoint, tmp_path):
    srv = Server(
        make_settings(tiny_checkpoint, tmp_path, api_keys=["k1", "k2"], auth_health=False)
    ).start()
    try:
        url = f"{srv.url}/v1/tasks/cg"
        data = {"class_id": "1", "steps": "1"}
        assert httpx.post(url, data=data).status_code == 401
        r = httpx.post(url, data=data, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert httpx.post(url, data=data, headers={"Authorization": "Bearer k2"}).status_code == 200
        assert httpx.get(f"{srv.url}/healthz").status_code == 200  # health stays open
        assert httpx.get(f"{srv.url}/v1/tasks").status_code == 401
    finally:
        srv.stop()
