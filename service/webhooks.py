"""Webhooks: when a job that names one reaches a final state, its state (the JSON of
`GET /v1/jobs/{id}`) is POSTed to it once, signed: `X-Magvit-Signature: sha256=<hex>`, the
HMAC-SHA256 of the body with the server's secret.

Off unless hosts are allowlisted (`Allowlist`): a webhook to any other host is refused when the
job is submitted (`check_url`, 422). At delivery the host is resolved again and every address
checked: a private, loopback, link-local or otherwise non-public address is refused unless it is
listed itself (an IP address or network of the allowlist), so a listed name that comes to point
inside the network reaches nothing there. The request goes to the address that was checked; no
proxies from the environment, no redirects followed, short timeouts, the answer's body unread.

Delivery is off the engine's path: `WebhookSender` takes the notifications of finished jobs from
the queue (each is handed to one sender, whatever process finished the job) in a thread of its
own and POSTs them from a small pool of threads, retrying timeouts, connection failures, 408,
429 and 5xx answers with exponential backoff up to `webhook_attempts` attempts.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import ipaddress
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

import httpx

from service.jobs import Job
from service.metrics import Metrics
from service.queue import JobQueue
from service.schemas import JobOut
from service.settings import Settings
from service.validation import InvalidRequest

log = logging.getLogger("magvit.webhooks")

SIGNATURE_HEADER = "X-Magvit-Signature"
MAX_URL_LENGTH = 2048
MAX_BACKOFF_S = 600.0
POLL_S = 0.25  # how often the sender asks the queue for finished jobs
TAKE = 16  # notifications taken at once

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for a body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Allowlist:
    """Where webhooks may go: host names (exact), subdomains (`*.example.com`), IP addresses
    and networks; the addresses and networks are also the only non-public ones reached."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com" for *.example.com
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[Network] = []
        for entry in entries:
            entry = entry.strip().lower().rstrip(".")
            if not entry:
                continue
            if entry.startswith("*."):
                suffixes.append(entry[1:])
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.names or self.suffixes or self.networks)

    def listed(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def allows_host(self, host: str) -> bool:
        """A URL's host: a listed name, a subdomain of a listed `*.` entry, or (an IP address)
        a listed address."""
        host = host.lower().rstrip(".")
        address = _address(host)
        if address is not None:
            return self.listed(address)
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    def allows_address(self, address: Address) -> bool:
        """An address a host resolved to: a public one, or one listed itself."""
        return _public(address) or self.listed(address)


def check_url(url: str, allowlist: Allowlist) -> None:
    """At submission: an http(s) URL, without credentials, to an allowlisted host; else
    InvalidRequest (422) saying why."""
    if not allowlist:
        raise InvalidRequest("webhooks are off on this server (it allowlists no hosts)")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"webhook: a URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InvalidRequest("webhook: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("webhook: an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("webhook: a URL without credentials")
    if not allowlist.allows_host(parts.hostname):
        raise InvalidRequest(f"webhook: host {parts.hostname!r} is not allowlisted on this server")


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # may succeed later: timeouts, connection failures, 408, 429, 5xx
    REFUSED = "refused"  # will not: a refused address, a redirect, another 4xx


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    detail: str


def post(
    url: str, body: bytes, headers: dict[str, str], allowlist: Allowlist, timeout_s: float
) -> Attempt:
    """One delivery attempt: resolve the host, check every address, POST to the first one
    (the Host header and TLS server name those of the URL)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not allowlist.allows_host(host):  # the settings changed since the job was submitted
        return Attempt(Outcome.REFUSED, f"host {host!r} is not allowlisted")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        return Attempt(Outcome.RETRY, f"cannot resolve {host!r}: {err}")
    addresses = [a for a in (_address(str(info[4][0])) for info in infos) if a is not None]
    if not addresses:
        return Attempt(Outcome.RETRY, f"{host!r} resolved to no address")
    for address in addresses:
        if not allowlist.allows_address(address):
            return Attempt(
                Outcome.REFUSED,
                f"{host!r} resolves to {address}, a non-public address that is not allowlisted",
            )
    address = addresses[0]
    netloc = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    target = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client,
            client.stream(
                "POST",
                target,
                content=body,
                headers=headers | {"Host": parts.netloc},
                extensions=extensions,
            ) as response,
        ):
            status = response.status_code  # the body is never read
    except httpx.HTTPError as err:
        return Attempt(Outcome.RETRY, f"{type(err).__name__} from {host!r}")
    if 200 <= status < 300:
        return Attempt(Outcome.DELIVERED, f"{status}")
    if 300 <= status < 400:
        return Attempt(Outcome.REFUSED, f"answered {status}; redirects are not followed")
    if status in (408, 425, 429) or status >= 500:
        return Attempt(Outcome.RETRY, f"answered {status}")
    return Attempt(Outcome.REFUSED, f"answered {status}")


@dataclass(order=True)
class _Delivery:
    due: float  # time.monotonic() of the next attempt
    job_id: str = field(compare=False)
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    attempts: int = field(default=0, compare=False)


class WebhookSender:
    """The webhooks of finished jobs, sent from a thread of its own and a pool of `workers`
    threads (a slow receiver holds one of them for one attempt's timeout at most). `stop()`
    gives the notifications not yet delivered back to the queue."""

    def __init__(
        self, queue: JobQueue, settings: Settings, metrics: Metrics | None = None, workers: int = 4
    ) -> None:
        if settings.webhook_secret is None:
            raise ValueError("webhooks need a secret")
        self.queue = queue
        self.allowlist = Allowlist.parse(settings.webhook_hosts)
        self.secret = settings.webhook_secret.get_secret_value().encode()
        self.attempts = settings.webhook_attempts
        self.backoff_s = settings.webhook_backoff_s
        self.timeout_s = settings.webhook_timeout_s
        self.public_url = (settings.public_url or "").rstrip("/")
        self.metrics = metrics
        self._pending: list[_Delivery] = []  # a heap by due time
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="magvit-webhook")
        self._thread = threading.Thread(target=self._run, name="magvit-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop taking notifications, let attempts in flight end (one timeout at most), give
        back the rest."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True)
        with self._lock:
            left = [d.job_id for d in self._pending]
            self._pending = []
        if left:
            try:
                self.queue.return_notifications(left)
            except Exception as err:  # the queue is unreachable: those webhooks are lost
                log.warning("could not give back %d webhooks: %s", len(left), err)

    def body(self, job: Job) -> bytes:
        """The job's state as `GET /v1/jobs/{id}` answers it (its URL from `public_url`)."""
        url = f"{self.public_url}/v1/jobs/{job.id}"
        return JobOut.from_job(job, url).model_dump_json().encode()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                taken = self.queue.take_notifications(TAKE)
            except Exception as err:  # the queue is unreachable: try again later
                log.warning("could not take webhooks: %s", err)
                taken = []
                self._stop.wait(1.0)
            now = time.monotonic()
            with self._lock:
                for job in taken:
                    if job.spec.webhook:
                        delivery = _Delivery(now, job.id, job.spec.webhook, self.body(job))
                        heapq.heappush(self._pending, delivery)
                due = []
                while self._pending and self._pending[0].due <= now:
                    due.append(heapq.heappop(self._pending))
            for delivery in due:
                self._pool.submit(self._attempt, delivery)
            if len(taken) < TAKE:
                self._stop.wait(POLL_S)

    def _attempt(self, d: _Delivery) -> None:
        if self._stop.is_set():  # stopping: given back, not tried
            self._push(d)
            return
        d.attempts += 1
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, d.body),
            "X-Magvit-Job": d.job_id,
            "User-Agent": "magvit-webhooks",
        }
        try:
            result = post(d.url, d.body, headers, self.allowlist, self.timeout_s)
        except Exception as err:  # never lose the sender's thread to one bad URL
            result = Attempt(Outcome.RETRY, f"internal error: {type(err).__name__}")
        if result.outcome is Outcome.DELIVERED:
            self._count("delivered")
            log.info("webhook of job %s delivered (attempt %d)", d.job_id, d.attempts)
        elif result.outcome is Outcome.RETRY and d.attempts < self.attempts:
            self._count("retried")
            d.due = time.monotonic() + min(self.backoff_s * 2 ** (d.attempts - 1), MAX_BACKOFF_S)
            self._push(d)
        else:
            self._count("failed")
            log.warning(
                "webhook of job %s not delivered after %d attempts: %s",
                d.job_id,
                d.attempts,
                result.detail,
            )

    def _push(self, d: _Delivery) -> None:
        with self._lock:
            heapq.heappush(self._pending, d)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhooks.labels(outcome).inc()
