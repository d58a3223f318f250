"""ASGI middleware of the API: security headers, authentication before any body is read, and
bounds on request bodies (size, and time to arrive)."""

from __future__ import annotations

import asyncio
import hmac

from service.errors import error_response
from service.jobs import key_id

_PLAYGROUND_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
_API_CSP = "default-src 'none'; frame-ancestors 'none'"
_DOCS_CSP = "frame-ancestors 'none'"  # the API docs load their scripts from a CDN


def _csp(path: str) -> str:
    if path == "/" or path.startswith("/static/"):
        return _PLAYGROUND_CSP
    if path in ("/docs", "/redoc") or path.startswith("/docs/"):
        return _DOCS_CSP
    return _API_CSP


class SecurityHeaders:
    """nosniff, no framing and a content security policy on every answer."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", _csp(scope["path"]).encode()),
        ]

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in names
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


class ApiKeys:
    """`Authorization: Bearer <key>` on the API (and, with `health`, on /healthz, /readyz and
    /metrics), checked before the body is read. The caller's key id goes to
    `request.state.owner`."""

    HEALTH = ("/healthz", "/readyz", "/metrics")

    def __init__(self, app, keys: list[str], health: bool) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.health = health

    def _protected(self, path: str) -> bool:
        return path.startswith("/v1/") or path == "/v1" or (self.health and path in self.HEALTH)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.keys or not self._protected(scope["path"]):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers", [])).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        matched = None
        for key in self.keys:  # every key compared, in constant time
            if hmac.compare_digest(token, key):
                matched = key
        if scheme.lower() != b"bearer" or matched is None:
            response = error_response(
                401,
                "a valid API key is required (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer", "Connection": "close"},
            )
            return await response(scope, receive, send)
        scope.setdefault("state", {})["owner"] = key_id(matched.decode())
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses request bodies over `limit` bytes while they stream in (413), whatever the
    Content-Length header claims, and bodies that stop arriving for `timeout_s` (408)."""

    def __init__(self, app, limit: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(413, scope, receive, send)
        seen = 0
        failed: int | None = None
        replaced = False
        complete = False

        async def limited_receive():
            nonlocal seen, failed, complete
            if complete:
                return await receive()  # after the body: wait for a disconnect, unbounded
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                failed = 408
                raise _BodyFailed from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.limit:
                    failed = 413
                    raise _BodyFailed
            return message

        async def guarded_send(message):
            # Frameworks turn a failed body read into their own 4xx; answer ours instead.
            nonlocal replaced
            if failed is not None:
                if not replaced:
                    replaced = True
                    await self._refuse(failed, scope, receive, send)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyFailed:
            if not replaced and failed is not None:
                await self._refuse(failed, scope, receive, send)

    async def _refuse(self, status: int, scope, receive, send):
        message = (
            f"the request body is larger than {self.limit} bytes"
            if status == 413
            else f"the request body did not arrive within {self.timeout_s} s"
        )
        response = error_response(status, message, headers={"Connection": "close"})
        await response(scope, receive, send)


class _BodyFailed(Exception):
    pass
