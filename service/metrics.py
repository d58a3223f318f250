"""Prometheus metrics (prefix magvit_, base units), on the service's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "magvit_requests_total",
            "HTTP requests by task and status code",
            ["task", "status"],
            registry=r,
        )
        self.jobs = Counter(
            "magvit_jobs_total", "Jobs that reached a final status", ["status"], registry=r
        )
        self.queue_depth = Gauge("magvit_queue_depth", "Jobs waiting in the queue", registry=r)
        self.queue_pending = Gauge(
            "magvit_queue_pending", "Jobs claimed by a worker, unfinished", registry=r
        )
        self.queue_lag = Gauge(
            "magvit_queue_lag", "Entries no worker has read yet (consumer-group lag)", registry=r
        )
        self.queue_redeliveries = Gauge(
            "magvit_queue_redeliveries",
            "Deliveries taken over from a worker that stopped",
            registry=r,
        )
        self.queue_dead_letters = Gauge(
            "magvit_queue_dead_letters", "Jobs given up after too many deliveries", registry=r
        )
        self.queue_wait = Histogram(
            "magvit_queue_wait_seconds", "Time from enqueue to start", buckets=_LATENCY, registry=r
        )
        self.inference = Histogram(
            "magvit_inference_seconds", "Model time per batch", buckets=_LATENCY, registry=r
        )
        sizes = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
        self.batch_size = Histogram(
            "magvit_batch_size", "Requests per model batch", buckets=sizes, registry=r
        )
        self.decode = Histogram(
            "magvit_video_decode_seconds",
            "Decoding an uploaded video",
            buckets=_LATENCY,
            registry=r,
        )
        self.webhooks = Counter(
            "magvit_webhooks_total",
            "Webhook attempts by outcome (delivered, retried, failed)",
            ["outcome"],
            registry=r,
        )
        self.encode = Histogram(
            "magvit_video_encode_seconds", "Encoding a result video", buckets=_LATENCY, registry=r
        )

    def observe_queue(self, stats: dict[str, int]) -> None:
        """Set the queue gauges from a backend's `stats()`."""
        self.queue_depth.set(stats["depth"])
        self.queue_pending.set(stats["pending"])
        self.queue_lag.set(stats["lag"])
        self.queue_redeliveries.set(stats["redeliveries"])
        self.queue_dead_letters.set(stats["dead_letters"])
