"""Prometheus metrics of the service, in a registry of its own (one per app, so tests stay isolated)."""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServiceMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """Request counts and latencies by route and status, batch sizes, model inference time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "attend_requests", "HTTP requests by route and status.", ["route", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "attend_request_seconds", "Request latency by route and status.", ["route", "method", "status"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "attend_batch_size", "Texts per model call (micro-batching).", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.inference = Histogram(
            "attend_inference_seconds", "Model time per batch.", ["route"], buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.texts = Counter("attend_texts", "Texts processed, by route.", ["route"], registry=self.registry)
        self.queued = Gauge("attend_queued_requests", "Requests waiting for a batch.", registry=self.registry)
        self.in_flight = Gauge("attend_in_flight_requests", "Requests being served.", registry=self.registry)
        # Which process answered: under --workers N each scrape reads one worker's figures, whose counters
        # had seemed to go backwards (5, then 2) with nothing to tell the workers apart.
        self.worker = Gauge("attend_worker_start_time_seconds", "When this worker process started (Unix time), by "
                            "pid: with --workers N each scrape reads one worker's metrics.", ["pid"],
                            registry=self.registry)  # fmt: skip
        self.worker.labels(pid=str(os.getpid())).set(time.time())

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = {"route": route, "method": method, "status": str(status)}
        self.requests.labels(**labels).inc()
        self.latency.labels(**labels).observe(seconds)

    def observe_batch(self, route: str, size: int, seconds: float, *, batched: bool = True) -> None:
        """One model call of ``size`` texts; ``batched``: made by the micro-batcher, the only calls
        ``attend_batch_size`` counts (an explanation's call is its request's own, however many texts)."""
        if batched:
            self.batch_size.observe(size)
        self.inference.labels(route=route).observe(seconds)
        self.texts.labels(route=route).inc(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
