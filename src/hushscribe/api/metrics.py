"""Prometheus metrics: HTTP traffic from this process, jobs and processing from the database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hushscribe.api.gpu_metrics import GpuCollector
from hushscribe.jobs.queue import JobQueue
from hushscribe.jobs.stats import PROCESSING_BUCKETS, Stats
from hushscribe.jobs.tables import STATUSES
from hushscribe.security import egress


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "hushscribe_http_requests", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "hushscribe_http_request_seconds", "HTTP request duration by route.",
            ["route"], registry=self.registry,
        )  # fmt: skip
        self.worker_restarts = Counter(
            "hushscribe_worker_restarts", "Worker processes restarted after they exited.",
            registry=self.registry,
        )  # fmt: skip

    def watch_jobs(self, queue: JobQueue, stats: Stats) -> None:
        self.registry.register(_JobCollector(queue, stats))
        self.registry.register(GpuCollector())


class _JobCollector(Collector):
    def __init__(self, queue: JobQueue, stats: Stats) -> None:
        self.queue, self.stats = queue, stats

    def collect(self) -> Iterator[Any]:
        counts = self.queue.counts_by_status()
        jobs = GaugeMetricFamily("hushscribe_jobs", "Jobs by state.", labels=["state"])
        for state in STATUSES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily(
            "hushscribe_queue_depth", "Jobs waiting for a worker.", value=counts.get("queued", 0)
        )
        s = self.stats.read()
        yield CounterMetricFamily(
            "hushscribe_audio_seconds_processed", "Seconds of audio transcribed.",
            value=s.get("audio_seconds_total", 0.0),
        )  # fmt: skip
        buckets = [
            (str(float(b)), s.get(f"processing_seconds_bucket:{b}", 0.0))
            for b in PROCESSING_BUCKETS
        ]
        buckets.append(("+Inf", s.get("processing_seconds_bucket:+Inf", 0.0)))
        yield HistogramMetricFamily(
            "hushscribe_job_processing_seconds", "Seconds from claim to result per job.",
            buckets=buckets, sum_value=s.get("processing_seconds_sum", 0.0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "hushscribe_real_time_factor", "Processing seconds per audio second, last job.",
            value=s.get("last_real_time_factor", 0.0),
        )  # fmt: skip
        yield _by_key(s, "model_load_seconds:", GaugeMetricFamily(
            "hushscribe_model_load_seconds", "Seconds the last load of each model took.",
            labels=["model"],
        ))  # fmt: skip
        yield _by_key(s, "model_memory_bytes:", GaugeMetricFamily(
            "hushscribe_model_memory_bytes",
            "Resident memory the last load of each model added to its worker.", labels=["model"],
        ))  # fmt: skip
        yield _by_key(s, "model_fallbacks_total:", CounterMetricFamily(
            "hushscribe_model_fallbacks", "Models passed over for the next of their chain, by "
            "reason.", labels=["reason"],
        ))  # fmt: skip
        yield GaugeMetricFamily(
            "hushscribe_egress_guard_active",
            "1 when this process refuses outgoing connections beyond its allowed hosts.",
            value=1.0 if egress.active() is not None else 0.0,
        )
        yield CounterMetricFamily(
            "hushscribe_egress_blocked",
            "Outgoing connections and lookups refused (this process).",
            value=egress.blocked_count(),
        )


def _by_key(
    stats: dict[str, float], prefix: str, family: GaugeMetricFamily | CounterMetricFamily
) -> GaugeMetricFamily | CounterMetricFamily:
    for key, value in stats.items():
        if key.startswith(prefix):
            family.add_metric([key.removeprefix(prefix)], value)
    return family


class MetricsMiddleware:
    """Counts every request by its route template (never the raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
