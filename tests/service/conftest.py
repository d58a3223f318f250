"""A real uvicorn server on loopback with the tiny model."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.checkpoint import save_checkpoint
from models.options import DecodeOptions
from models.pipeline import MagvitPipeline
from service.app import GracefulServer, create_app, server_config
from service.jobs import JobSpec
from service.settings import Settings
from tests.support.redis_server import RedisServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    pipe = MagvitPipeline.random_init("tiny", seed=0)
    path = tmp_path_factory.mktemp("ckpt")
    # Named classes, as a checkpoint trained on a folder with a manifest has them.
    names = tuple(f"scene {i}" for i in range(pipe.config.num_classes))
    config = dataclasses.replace(pipe.config, class_names=names)
    save_checkpoint(path, config, pipe.tokenizer.state_dict(), pipe.transformer.state_dict())
    return path


@pytest.fixture(scope="session")
def rate_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint that learnt motion at 4 fps (an 8 fps upload is read at a step of 2),
    conditioned on 3 frames, so that the frames frame prediction reads show the step."""
    pipe = MagvitPipeline.random_init("tiny", seed=0)
    path = tmp_path_factory.mktemp("rate-ckpt")
    config = dataclasses.replace(pipe.config, frame_rate=4.0, cond_frames=3)
    save_checkpoint(path, config, pipe.tokenizer.state_dict(), pipe.transformer.state_dict())
    return path


class Server:
    """uvicorn in a thread; `stop()` shuts it down gracefully."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = server_config(self.app, settings, log_level="warning")
        self.server = GracefulServer(config, self.app)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.port}"

    def start(self, ready: bool = True) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/readyz" if ready else f"{self.url}/healthz", timeout=1)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_settings(checkpoint: Path, data_dir: Path, **overrides) -> Settings:
    base = {
        "checkpoint": checkpoint,
        "data_dir": data_dir,
        "port": free_port(),
        "device": "cpu",
        "max_wait_ms": 50,
        "max_batch_size": 4,
    }
    return Settings(**(base | overrides))


@contextlib.contextmanager
def serving(checkpoint: Path, data_dir: Path, **overrides) -> Iterator[Server]:
    """A server on `checkpoint` for the length of a `with` block."""
    srv = Server(make_settings(checkpoint, data_dir, **overrides)).start()
    try:
        yield srv
    finally:
        srv.stop()


@contextlib.contextmanager
def client_of(srv: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory) -> Iterator[Server]:
    with serving(tiny_checkpoint, tmp_path_factory.mktemp("data")) as srv:
        yield srv


@pytest.fixture()
def client(server) -> Iterator[httpx.Client]:
    with client_of(server) as c:
        yield c


def spec(task: str = "cg", steps: int = 2, **fields) -> JobSpec:
    """A job record for queue tests: class-conditional generation by default."""
    base = {"task": task, "seed": 1, "class_id": 3, "format": "mp4"}
    return JobSpec(**(base | fields), options=DecodeOptions(steps=steps))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private Redis server (tests/support/redis_server.py), one per test module."""
    server = RedisServer().start()
    yield server
    server.stop()
