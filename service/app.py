"""The FastAPI application: settings, start-up (load, warm up), shutdown (drain), middleware."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from models.checkpoint import default_checkpoint_dir, read_config
from models.config import ModelConfig
from service import errors, routes
from service.http_protocol import with_header_timeout
from service.metrics import Metrics
from service.middleware import ApiKeys, BodyLimit, SecurityHeaders
from service.queue import JobQueue
from service.runtime import load_engine, make_scheduler, make_webhooks, open_checked_queue
from service.scheduler import Scheduler
from service.settings import Settings

log = logging.getLogger("magvit.service")
STATIC = Path(__file__).parent / "static"


@dataclass
class AppState:
    settings: Settings
    config: ModelConfig
    queue: JobQueue
    scheduler: Scheduler | None  # made at start-up
    metrics: Metrics
    ready: bool = False
    not_ready_reason: str | None = "loading the model"
    load_failed: bool = False  # the model did not load: refuse work at once


def create_app(settings: Settings | None = None, engine=None) -> FastAPI:
    """The app. `engine` may be given (tests); otherwise it is loaded at start-up from
    `settings.checkpoint` when `settings.workers > 0`."""
    settings = settings or Settings()
    checkpoint = settings.checkpoint or default_checkpoint_dir()
    config = engine.config if engine is not None else read_config(checkpoint)[0]
    metrics = Metrics()
    queue = open_checked_queue(settings)  # a SQLite queue makes its data directory

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal engine
        st: AppState = app.state.magvit
        scheduler = st.scheduler = make_scheduler(queue, settings, metrics)
        webhooks = make_webhooks(queue, settings, metrics)
        if webhooks is not None:
            webhooks.start()
        loader = asyncio.create_task(_load(st, scheduler))
        try:
            yield
        finally:
            loader.cancel()
            await scheduler.stop()
            if webhooks is not None:
                await asyncio.to_thread(webhooks.stop)
            queue.close()

    async def _load(st: AppState, scheduler: Scheduler) -> None:
        nonlocal engine
        try:
            if engine is None and settings.workers > 0:
                engine = await load_engine(settings)
            elif engine is not None and settings.warmup:
                await asyncio.to_thread(engine.warmup)
        except Exception as err:  # the process stays up and says why it is not ready
            log.error("could not load the model: %s", err, exc_info=True)
            st.not_ready_reason = "the model failed to load (see the server log)"
            st.load_failed = True
            return
        scheduler.engine = engine
        scheduler.start()
        st.ready, st.not_ready_reason = True, None
        log.info("ready")

    app = FastAPI(
        title="magvit",
        version="0.1.0",
        description="MAGVIT video generation: ten tasks, synchronous or as durable jobs.",
        lifespan=lifespan,
    )
    app.state.magvit = AppState(settings, config, queue, None, metrics)  # scheduler at start-up

    errors.install(app)
    routes.install(app, settings.max_steps, settings.max_output_frames)
    # The playground: static files shipped in the package; the page asks for a key itself.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def playground():
        return FileResponse(STATIC / "index.html")

    # Outermost last: body bounds, then keys (before any body is read), CORS, headers.
    app.add_middleware(
        BodyLimit, limit=settings.max_upload_bytes + 64 * 1024, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(ApiKeys, keys=settings.api_keys, health=settings.auth_health)
    if settings.cors_origins:
        headers = ["Authorization", "Content-Type", "Idempotency-Key"]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=headers,
        )
    app.add_middleware(SecurityHeaders)
    return app


class GracefulServer(uvicorn.Server):
    """uvicorn that, on SIGTERM or SIGINT, first tells the app to stop taking work: /readyz
    answers 503, nothing new is claimed, waiting synchronous requests answer 503 at once. Its
    graceful shutdown and the drain share one drain timeout."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.state: AppState = app.state.magvit

    def handle_exit(self, sig, frame) -> None:
        if self.state.scheduler is not None:
            self.state.scheduler.begin_stop()
        super().handle_exit(sig, frame)


def server_config(app: FastAPI, settings: Settings, log_level: str = "info") -> uvicorn.Config:
    """uvicorn for the app: its header deadline, and a graceful shutdown within the drain."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        http=with_header_timeout(settings.header_timeout_s),
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
    )


def serve(app: FastAPI, settings: Settings, log_level: str = "info") -> None:
    GracefulServer(server_config(app, settings, log_level), app).run()
