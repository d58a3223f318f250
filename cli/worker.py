"""`magvit worker`: a process that owns the model and runs the queue's jobs, with no HTTP API.

API replicas (`magvit serve --queue redis://... --workers 0`) accept jobs; workers on any
machine claim them in batches. SIGTERM drains: running batches finish within the drain timeout,
claimed jobs that did not start go back to the queue.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.main import CliError


def add_parser(sub) -> None:
    p = sub.add_parser("worker", help="run a queue worker (model, no HTTP API)")
    p.add_argument(
        "--queue", default=None, help="redis://HOST:PORT/DB or sqlite:///PATH (MAGVIT_QUEUE_URL)"
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped one")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--max-batch-size", type=int, default=None, help="default 4")
    p.add_argument("--max-wait-ms", type=int, default=None, help="default 50")
    p.add_argument("--lease-seconds", type=float, default=None, help="default 60")
    p.add_argument("--data-dir", type=Path, default=None, help="for a sqlite queue")
    p.add_argument(
        "--metrics-port", type=int, default=9100, help="Prometheus metrics on this port (0: none)"
    )
    p.add_argument(
        "--metrics-host", default="127.0.0.1", help="default 127.0.0.1 (0.0.0.0: all interfaces)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from pydantic import ValidationError

    from models.checkpoint import CheckpointError
    from service.runtime import QueueNotDurable
    from service.settings import Settings

    overrides = {
        "queue_url": args.queue,
        "checkpoint": args.checkpoint,
        "device": args.device,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
        "lease_seconds": args.lease_seconds,
        "data_dir": args.data_dir,
    }
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        raise CliError(f"invalid settings: {err}") from None
    if settings.queue_url is None:
        raise CliError("a worker needs --queue (or MAGVIT_QUEUE_URL): redis://HOST:PORT/DB")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_work(settings, args.metrics_host, args.metrics_port))
    except (CheckpointError, QueueNotDurable) as err:
        raise CliError(str(err)) from None
    return 0


async def _work(settings, metrics_host: str, metrics_port: int) -> None:
    import asyncio
    import logging
    import signal

    from prometheus_client import start_http_server

    from service.metrics import Metrics
    from service.runtime import load_engine, make_scheduler, make_webhooks, open_checked_queue

    log = logging.getLogger("magvit.worker")
    engine = await load_engine(settings)
    queue = open_checked_queue(settings)
    metrics = Metrics()
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)
    scheduler = make_scheduler(queue, settings, metrics)
    scheduler.engine = engine
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    webhooks = make_webhooks(queue, settings, metrics)
    if webhooks is not None:
        webhooks.start()
    scheduler.start()
    log.info("worker %s ready on %s", getattr(queue, "worker", "?"), settings.queue_url)
    await stop.wait()
    log.info("draining")
    await scheduler.stop()
    if webhooks is not None:
        await asyncio.to_thread(webhooks.stop)
    queue.close()
