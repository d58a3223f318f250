"""The worker runtime shared by `magvit serve` (service/app.py) and `magvit worker`
(cli/worker.py): the checked queue, the engine (loaded and warmed up off the event loop), the
scheduler that joins them and the webhook sender. `service.engine` (torch, the model) is
imported only when an engine is loaded, so an API-only process never loads it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from service.metrics import Metrics
from service.queue import JobQueue, QueueUnavailable
from service.queue_factory import open_queue
from service.scheduler import Scheduler
from service.settings import Settings

if TYPE_CHECKING:
    from service.engine import Engine
    from service.webhooks import WebhookSender

log = logging.getLogger("magvit.runtime")


class QueueNotDurable(RuntimeError):
    """The queue would lose accepted jobs on a restart, and the settings require it not to."""


def open_checked_queue(settings: Settings) -> JobQueue:
    """The settings' queue, its persistence checked: a warning, or QueueNotDurable with
    `require_durable_queue`."""
    queue = open_queue(
        settings.queue_url, settings.data_dir, settings.job_max_attempts, settings.result_ttl_s
    )
    try:
        problem = queue.durability_problem()
    except QueueUnavailable:
        log.warning("the queue is unreachable; its persistence is not checked")
        return queue
    if problem is not None:
        if settings.require_durable_queue:
            queue.close()
            raise QueueNotDurable(problem)
        log.warning("%s", problem)
    return queue


async def load_engine(settings: Settings) -> Engine:
    from models.checkpoint import default_checkpoint_dir
    from service.engine import Engine

    checkpoint = settings.checkpoint or default_checkpoint_dir()
    engine = await asyncio.to_thread(
        Engine.load, checkpoint, settings.device, settings.precision, settings.compile
    )
    if settings.warmup:
        await asyncio.to_thread(engine.warmup)
    return engine


def make_scheduler(queue: JobQueue, settings: Settings, metrics: Metrics) -> Scheduler:
    """The scheduler, without an engine until one is attached (`scheduler.engine = ...`)."""
    return Scheduler(queue, None, settings, metrics)


def make_webhooks(queue: JobQueue, settings: Settings, metrics: Metrics) -> WebhookSender | None:
    """The webhook sender of this process (to `start()` and `stop()`), or None when webhooks
    are off (no allowlisted hosts)."""
    if not settings.webhook_hosts:
        return None
    from service.webhooks import WebhookSender

    return WebhookSender(queue, settings, metrics)
