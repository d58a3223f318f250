"""The FastAPI application: settings, start-up (load, warm up), shutdown (drain), middleware."""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from models.checkpoint import default_checkpoint_dir, read_config
from models.config import ModelConfig
from service import errors, routes
from service.errors import ApiError, error_response
from service.metrics import Metrics
from service.queue import JobQueue, open_queue
from service.scheduler import Scheduler
from service.settings import Settings

log = logging.getLogger("magvit.service")
STATIC = Path(__file__).parent / "static"


@dataclass
class AppState:
    settings: Settings
    config: ModelConfig
    queue: JobQueue
    scheduler: Scheduler
    metrics: Metrics
    ready: bool = False
    not_ready_reason: str | None = "loading the model"


class BodyLimit:
    """Refuses request bodies over `limit` bytes while they stream in (413), whatever the
    Content-Length header claims."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0
        exceeded = False
        replaced = False

        async def limited_receive():
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            # Frameworks turn a failed body read into their own 4xx; answer 413 instead.
            nonlocal replaced
            if exceeded:
                if not replaced:
                    replaced = True
                    await self._refuse(scope, receive, send)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        response = error_response(413, f"the request body is larger than {self.limit} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(settings: Settings | None = None, engine=None) -> FastAPI:
    """The app. `engine` may be given (tests); otherwise it is loaded at start-up from
    `settings.checkpoint` when `settings.workers > 0`."""
    settings = settings or Settings()
    checkpoint = settings.checkpoint or default_checkpoint_dir()
    config = engine.config if engine is not None else read_config(checkpoint)[0]
    metrics = Metrics()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    queue = open_queue(
        settings.queue_url, settings.data_dir, settings.job_max_attempts, settings.result_ttl_s
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal engine
        st: AppState = app.state.magvit
        st.scheduler = Scheduler(queue, None, settings, metrics)
        loader = asyncio.create_task(_load(st))
        try:
            yield
        finally:
            loader.cancel()
            await st.scheduler.stop()
            queue.close()

    async def _load(st: AppState) -> None:
        nonlocal engine
        try:
            if engine is None and settings.workers > 0:
                from service.engine import Engine

                engine = await asyncio.to_thread(Engine.load, checkpoint, settings.device)
            if engine is not None and settings.warmup:
                await asyncio.to_thread(engine.warmup)
        except Exception as err:  # the process stays up and says why it is not ready
            log.exception("could not load the model")
            st.not_ready_reason = f"model failed to load: {err}"
            return
        st.scheduler.engine = engine
        st.scheduler.start()
        st.ready, st.not_ready_reason = True, None
        log.info("ready")

    app = FastAPI(
        title="magvit",
        version="0.1.0",
        description="MAGVIT video generation: ten tasks, synchronous or as durable jobs.",
        lifespan=lifespan,
    )
    app.state.magvit = AppState(settings, config, queue, None, metrics)  # scheduler at start-up

    async def auth(request: Request) -> None:
        if not settings.api_keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        ok = scheme.lower() == "bearer" and any(
            hmac.compare_digest(token.encode(), key.encode()) for key in settings.api_keys
        )
        if not ok:
            raise ApiError(
                401,
                "a valid API key is required (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    errors.install(app)
    routes.install(app, auth, settings.auth_health)
    # The playground: static files shipped in the package; the page asks for a key itself.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def playground():
        return FileResponse(STATIC / "index.html")

    if settings.cors_origins:
        headers = ["Authorization", "Content-Type", "Idempotency-Key"]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=headers,
        )
    # Multipart overhead on top of the largest accepted video.
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 64 * 1024)
    return app
