"""Isolation between API keys, idempotency keys, security headers, and requests refused before
their body is read or when it never arrives."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.service.conftest import Server, make_settings
from tests.support import videos

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


@pytest.fixture(scope="module")
def keyed(tiny_checkpoint, tmp_path_factory):
    settings = make_settings(
        tiny_checkpoint,
        tmp_path_factory.mktemp("keyed"),
        api_keys=["key-a", "key-b"],
        body_timeout_s=0.5,
        header_timeout_s=0.5,
    )
    srv = Server(settings).start()
    yield srv
    srv.stop()


def _wait_done(url: str, job_id: str, headers: dict) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


def test_jobs_belong_to_their_api_key(keyed):
    data = {"task": "cg", "class_id": "1", "steps": "1", "seed": "3"}
    idem = {"Idempotency-Key": "same-key"}
    job = httpx.post(f"{keyed.url}/v1/jobs", data=data, headers=A | idem).json()
    _wait_done(keyed.url, job["id"], A)
    base = f"{keyed.url}/v1/jobs/{job['id']}"
    for method, path in (("GET", ""), ("GET", "/result"), ("GET", "/events"), ("DELETE", "")):
        r = httpx.request(method, base + path, headers=B)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["type"] == "not_found"
    assert httpx.get(f"{base}/result", headers=A).status_code == 200
    # The same idempotency key from another API key is another job.
    other = httpx.post(f"{keyed.url}/v1/jobs", data=data, headers=B | idem)
    assert other.status_code == 202 and other.json()["id"] != job["id"]
    again = httpx.post(f"{keyed.url}/v1/jobs", data=data, headers=A | idem)
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    # The stored job records a key id, never the key.
    stored = (keyed.settings.data_dir / "jobs.sqlite3").read_bytes()
    assert b"key-a" not in stored and b"key-b" not in stored


@pytest.mark.parametrize("key", ["", "x" * 201, "two words", "caf\u00e9".encode()])
def test_bad_idempotency_keys_answer_400(keyed, key):
    data = {"task": "cg", "class_id": "1", "steps": "1"}
    for _ in range(2):  # the second request used to hit the first one's empty key: 500
        r = httpx.post(f"{keyed.url}/v1/jobs", data=data, headers=A | {"Idempotency-Key": key})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "bad_request"


@pytest.mark.parametrize("path", ["/", "/healthz", "/v1/tasks", "/v1/jobs/nope", "/openapi.json"])
def test_security_headers_on_every_answer(keyed, path):
    for headers in ({}, A):
        r = httpx.get(keyed.url + path, headers=headers)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    page = httpx.get(keyed.url + "/")
    assert "script-src" not in page.headers["content-security-policy"]  # 'self' by default
    assert "default-src 'self'" in page.headers["content-security-policy"]


def _raw(url: str, request: bytes, timeout: float = 5) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        s.settimeout(timeout)
        return s.recv(65536)


def test_unauthenticated_requests_are_refused_before_the_body(keyed):
    start = time.monotonic()
    answer = _raw(
        keyed.url,
        b"POST /v1/tasks/opc HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert time.monotonic() - start < 0.4  # not after the body timeout


def test_a_body_that_never_arrives_times_out(keyed):
    start = time.monotonic()
    answer = _raw(
        keyed.url,
        b"POST /v1/tasks/opc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-a\r\n"
        b"Content-Length: 5000\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"type":"timeout"' in answer
    assert time.monotonic() - start < 5


def test_concat_upload_cannot_read_a_stored_result(keyed):
    """The attack of the issue: a concat script naming a file beside the data directory."""
    r = httpx.post(
        f"{keyed.url}/v1/tasks/fp",
        data={"steps": "1"},
        files={"video": ("a.mp4", b"ffconcat version 1.0\nfile results/x\n", "video/mp4")},
        headers=A,
    )
    assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media"
    ok = httpx.post(
        f"{keyed.url}/v1/tasks/fp",
        data={"steps": "1"},
        files={"video": ("a.mp4", videos.clip("mp4"))},
        headers=A,
    )
    assert ok.status_code == 200


def test_headers_that_never_arrive_time_out(keyed):
    host, port = keyed.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /v1/tasks/opc HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        start = time.monotonic()
        assert s.recv(1024) == b""  # closed by the server
        assert time.monotonic() - start < 3
