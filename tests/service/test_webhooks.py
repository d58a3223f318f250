"""Webhooks against a real HTTP receiver on loopback: delivered once and signed, retried with
backoff, never redirected, refused outside the allowlist and at non-public addresses."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from pydantic import ValidationError

from service.jobs import JobSpec
from service.redis_queue import RedisQueue
from service.settings import Settings
from service.sqlite_queue import SqliteQueue
from service.validation import InvalidRequest
from service.webhooks import Allowlist, Outcome, check_url, post
from tests.service.conftest import Server, make_settings, spec

SECRET = "webhook-secret"


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every request. `answers[path]`: the status
    codes to answer in turn (then 200); a 302 points at /elsewhere."""

    answers: dict[str, list[int]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    port: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def wait(self, path: str, count: int, timeout: float = 30) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.on(path)) >= count:
                return self.on(path)
            time.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.on(path))} requests, wanted {count}")


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the standard library's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec.hits.append(Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            queue = rec.answers.get(self.path, [])
            status = queue.pop(0) if queue else 200
            self.send_response(status)
            if status == 302:
                self.send_header("Location", rec.url("/elsewhere"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def _settings(checkpoint, data_dir, hosts, **extra) -> Settings:
    settings = make_settings(
        checkpoint,
        data_dir,
        webhook_hosts=hosts,
        webhook_secret=SECRET,
        webhook_backoff_s=0.05,
        webhook_attempts=3,
        webhook_timeout_s=2,
        **extra,
    )
    return settings.model_copy(update={"public_url": f"http://127.0.0.1:{settings.port}"})


@pytest.fixture()
def hooked(tiny_checkpoint, tmp_path) -> Iterator[Server]:
    """A server that allowlists 127.0.0.1, where the receiver is."""
    srv = Server(_settings(tiny_checkpoint, tmp_path, ["127.0.0.1"])).start()
    yield srv
    srv.stop()


def _job(srv: Server, webhook: str, **data) -> httpx.Response:
    fields = {"task": "cg", "class_id": "1", "steps": "1", "webhook": webhook} | data
    return httpx.post(f"{srv.url}/v1/jobs", data=fields, timeout=30)


def _verified(hit: Hit) -> dict:
    expected = "sha256=" + hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.headers["x-magvit-signature"], expected)
    assert hit.headers["content-type"] == "application/json"
    return json.loads(hit.body)


def test_the_final_state_is_posted_once_and_signed(hooked, receiver):
    r = _job(hooked, receiver.url("/hook"))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    [hit] = receiver.wait("/hook", 1)
    body = _verified(hit)
    assert body == httpx.get(f"{hooked.url}/v1/jobs/{job_id}").json()  # GET's JSON, as is
    assert body["status"] == "completed" and hit.headers["x-magvit-job"] == job_id
    time.sleep(0.5)
    assert len(receiver.on("/hook")) == 1  # once
    stored = hooked.app.state.magvit.queue.get(job_id)
    assert stored.spec.webhook == receiver.url("/hook")


def test_an_api_only_process_sends_the_webhooks_of_cancelled_jobs(
    tiny_checkpoint, tmp_path, receiver
):
    srv = Server(_settings(tiny_checkpoint, tmp_path, ["127.0.0.1"], workers=0)).start()
    try:
        job_id = _job(srv, receiver.url("/cancelled")).json()["id"]
        assert httpx.delete(f"{srv.url}/v1/jobs/{job_id}").json()["status"] == "cancelled"
        [hit] = receiver.wait("/cancelled", 1)
        body = _verified(hit)
        assert body["status"] == "cancelled" and body["error_type"] == "cancelled"
    finally:
        srv.stop()


def test_failed_deliveries_are_retried_with_backoff(hooked, receiver):
    receiver.answers["/flaky"] = [500, 503]
    job_id = _job(hooked, receiver.url("/flaky")).json()["id"]
    hits = receiver.wait("/flaky", 3)
    assert [_verified(h)["id"] for h in hits] == [job_id] * 3
    assert len({h.body for h in hits}) == 1  # the same body, signed the same
    receiver.answers["/down"] = [500] * 10
    _job(hooked, receiver.url("/down"))
    receiver.wait("/down", 3)
    time.sleep(0.6)
    assert len(receiver.on("/down")) == 3  # webhook_attempts, then given up
    metrics = httpx.get(f"{hooked.url}/metrics").text
    assert 'magvit_webhooks_total{outcome="failed"} 1.0' in metrics


def test_redirects_are_not_followed(hooked, receiver):
    receiver.answers["/moved"] = [302]
    _job(hooked, receiver.url("/moved"))
    receiver.wait("/moved", 1)
    time.sleep(0.6)  # time for any retry or redirect
    assert len(receiver.on("/moved")) == 1 and receiver.on("/elsewhere") == []


def test_a_name_that_resolves_to_a_private_address_is_refused(tiny_checkpoint, tmp_path, receiver):
    # localhost is allowlisted by name, but its addresses (loopback) are not listed.
    srv = Server(_settings(tiny_checkpoint, tmp_path, ["localhost"])).start()
    try:
        r = _job(srv, receiver.url("/private", host="localhost"))
        assert r.status_code == 202, r.text
        done = r.json()["id"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{srv.url}/v1/jobs/{done}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        metrics = ""
        while 'magvit_webhooks_total{outcome="failed"} 1.0' not in metrics:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            metrics = httpx.get(f"{srv.url}/metrics").text
        assert receiver.hits == []
        assert 'outcome="retried"' not in metrics  # refused at once, not retried
    finally:
        srv.stop()


def test_webhooks_outside_the_allowlist_are_refused_at_submission(hooked, receiver):
    for url, message in [
        ("http://example.com/hook", "not allowlisted"),
        ("http://127.0.0.2/hook", "not allowlisted"),
        ("ftp://127.0.0.1/hook", "http:// or https://"),
        ("http://user:pw@127.0.0.1/hook", "without credentials"),
        ("http://127.0.0.1:99999/hook", "not a valid URL"),
        ("http://" + "a" * 3000, "webhook"),
    ]:
        r = _job(hooked, url)
        assert r.status_code == 422, (url, r.text)
        assert message in r.json()["error"]["message"], (url, r.text)
    assert receiver.hits == []


def test_webhooks_are_off_without_an_allowlist(server, receiver):
    r = _job(server, receiver.url("/hook"))
    assert r.status_code == 422 and "webhooks are off" in r.json()["error"]["message"]
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET"):
        Settings(webhook_hosts=["127.0.0.1"])


def test_the_address_policy():
    allow = Allowlist.parse(["hooks.example.com", "*.example.org", "10.1.0.0/16", "::1"])
    assert allow.allows_host("hooks.example.com") and allow.allows_host("a.b.example.org")
    assert not allow.allows_host("example.org") and not allow.allows_host("evil.com")
    assert allow.allows_host("10.1.2.3") and not allow.allows_host("10.2.0.1")
    for text, allowed in [
        ("93.184.216.34", True),  # public
        ("10.1.2.3", True),  # private, but listed
        ("10.2.0.1", False),
        ("192.168.1.1", False),
        ("172.16.0.1", False),
        ("169.254.169.254", False),  # link-local: cloud metadata
        ("127.0.0.1", False),
        ("::1", True),  # listed
        ("::ffff:127.0.0.1", False),  # loopback, mapped into IPv6
        ("fe80::1", False),
        ("0.0.0.0", False),
    ]:
        assert allow.allows_address(ipaddress.ip_address(text)) is allowed, text
    with pytest.raises(InvalidRequest, match="off"):
        check_url("http://hooks.example.com/", Allowlist.parse([]))


def test_delivery_checks_the_address_it_resolves(receiver, monkeypatch):
    """A listed name whose DNS answer turns private is refused before any connection."""
    import socket

    def rebound(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    allow = Allowlist.parse(["hooks.example.com"])
    url = f"http://hooks.example.com:{receiver.port}/rebound"
    result = post(url, b"{}", {}, allow, 2)
    assert result.outcome is Outcome.REFUSED and "non-public" in result.detail
    assert receiver.hits == []
    listed = post(url, b"{}", {}, Allowlist.parse(["hooks.example.com", "127.0.0.1"]), 2)
    assert listed.outcome is Outcome.DELIVERED
    [hit] = receiver.on("/rebound")
    assert hit.headers["host"] == f"hooks.example.com:{receiver.port}"  # the URL's host


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_each_notification_is_taken_once(kind, tmp_path, request):
    if kind == "sqlite":
        one, two = (SqliteQueue(tmp_path / "jobs.sqlite3") for _ in range(2))
    else:
        url = request.getfixturevalue("redis_server").url
        RedisQueue(url).r.flushall()
        one, two = RedisQueue(url), RedisQueue(url)
    hooked, _ = one.enqueue(spec(webhook="http://127.0.0.1/x"))
    plain, _ = one.enqueue(spec())
    assert one.take_notifications(10) == []  # not finished yet
    for job in (hooked, plain):
        one.cancel(job.id)
    [taken] = two.take_notifications(10)
    assert taken.id == hooked.id and taken.status == "cancelled"
    assert one.take_notifications(10) == [] and two.take_notifications(10) == []
    two.return_notifications([hooked.id])
    assert [j.id for j in one.take_notifications(10)] == [hooked.id]


def test_the_webhook_joins_the_record():
    job = spec(webhook="https://hooks.example.com/x")
    assert JobSpec.from_json(job.to_json()) == job
    assert JobSpec.from_json(spec().to_json()).webhook is None


def test_webhooks_still_to_retry_at_shutdown_go_back_to_the_queue(tmp_path, receiver):
    from service.webhooks import WebhookSender

    queue = SqliteQueue(tmp_path / "jobs.sqlite3")
    settings = Settings(
        data_dir=tmp_path,
        webhook_hosts=["127.0.0.1"],
        webhook_secret=SECRET,
        webhook_backoff_s=60,  # the retry would come long after the stop
    )
    receiver.answers["/later"] = [500]
    job, _ = queue.enqueue(spec(webhook=receiver.url("/later")))
    queue.cancel(job.id)
    sender = WebhookSender(queue, settings)
    sender.start()
    receiver.wait("/later", 1)
    time.sleep(0.1)
    sender.stop()
    assert [j.id for j in queue.take_notifications(10)] == [job.id]
    assert len(receiver.on("/later")) == 1
