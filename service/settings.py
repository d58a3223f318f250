"""All service settings in one pydantic-settings object (environment prefix MAGVIT_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    # An empty variable means the default, so that compose files can pass `${MAGVIT_X:-}` through.
    model_config = SettingsConfigDict(env_prefix="MAGVIT_", extra="ignore", env_ignore_empty=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    checkpoint: Path | None = None  # None: the shipped default checkpoint
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")
    # auto: fp16 on CUDA, bf16 on a CPU with native bf16, else fp32 (models.pipeline)
    precision: str = Field("auto", pattern="^(auto|fp32|bf16|fp16)$")
    # torch.compile the transformer at start-up (its compilation is part of the warm-up).
    compile: bool = False
    # sqlite:///PATH (default: <data_dir>/jobs.sqlite3) or redis://HOST:PORT/DB (many machines)
    queue_url: str | None = Field(None, pattern=r"^(sqlite:///.+|rediss?://.+|unix://.+)$")
    # Refuse to start on a queue that would lose accepted jobs on a restart (else: a warning).
    require_durable_queue: bool = False
    workers: int = Field(1, ge=0, le=1)  # 1: run the engine in this process; 0: API only
    data_dir: Path = Path("data")

    api_keys: Annotated[list[str], NoDecode] = []
    auth_health: bool = False  # whether /healthz, /readyz and /metrics need a key
    cors_origins: Annotated[list[str], NoDecode] = []

    max_batch_size: int = Field(4, ge=1, le=64)
    max_wait_ms: int = Field(50, ge=0, le=10_000)
    max_queue: int = Field(64, ge=1)
    request_timeout_s: float = Field(300.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)  # a request body that stalls this long: 408
    header_timeout_s: float = Field(10.0, gt=0)  # request headers not complete by then: closed
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_video_pixels: int = Field(3840 * 2160, ge=64)
    max_video_frames: int = Field(1024, ge=1)
    max_video_seconds: float = Field(600.0, gt=0)
    decode_timeout_s: float = Field(20.0, gt=0)
    max_steps: int = Field(64, ge=1)
    # The longest video fp and cfp make (`frames`), sliding the model's window.
    max_output_frames: int = Field(128, ge=1, le=4096)
    result_ttl_s: float = Field(86_400.0, gt=0)
    job_max_attempts: int = Field(3, ge=1)
    lease_seconds: float = Field(60.0, gt=0)
    # How often a running batch records progress and checks for cancellation (the last step
    # always does): the queue's round trips stay off the model's time.
    progress_interval_s: float = Field(0.25, ge=0.0, le=10.0)
    drain_timeout_s: float = Field(30.0, ge=0)
    warmup: bool = True
    # The API's address as its clients reach it (https://magvit.example.com): job URLs in
    # webhook bodies. Unset: those URLs are paths (/v1/jobs/<id>).
    public_url: str | None = Field(None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")

    # Webhooks (service/webhooks.py), off unless hosts are allowlisted: host names (exact, or
    # *.example.com for its subdomains), IP addresses and networks (10.0.0.0/8). A webhook to a
    # private, loopback or link-local address is sent only if that address is listed itself.
    webhook_hosts: Annotated[list[str], NoDecode] = []
    webhook_secret: SecretStr | None = None  # signs every body (HMAC-SHA256); needed with hosts
    webhook_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_s: float = Field(1.0, gt=0, le=600)  # before the second attempt, doubling
    webhook_timeout_s: float = Field(5.0, gt=0, le=60)  # per attempt: connect, send, answer

    @field_validator("api_keys", "cors_origins", "webhook_hosts", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> Settings:
        if self.webhook_hosts and not (
            self.webhook_secret and self.webhook_secret.get_secret_value()
        ):
            raise ValueError(
                "MAGVIT_WEBHOOK_HOSTS needs MAGVIT_WEBHOOK_SECRET (webhooks are signed)"
            )
        return self
