"""Prometheus metrics (``prometheus-client``), one private CollectorRegistry per app.

A private registry keeps two apps in one process (tests) from colliding, and label values come
only from *resolved* model names (never from client text), so a client cannot grow the series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the app)

LATENCY_BUCKETS = (50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 0.1, 0.25, 0.5, 1.0, 2.5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
ERROR_KINDS = ("bad_request", "unauthorized", "not_found", "too_large", "overloaded", "internal")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.latency = Histogram("sparkscore_request_latency_seconds", "Request latency in the app (parse to reply)",
                                 ["protocol", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("sparkscore_requests", "Answered predictions", ["protocol", "model", "version"], registry=r)
        self.batch_rows = Histogram("sparkscore_batch_rows", "Rows per kernel call", ["model"], buckets=ROW_BUCKETS,
                                    registry=r)
        self.batch_requests = Histogram("sparkscore_batch_requests", "Requests coalesced per kernel call", ["model"],
                                        buckets=ROW_BUCKETS, registry=r)
        self.queue_depth = Gauge("sparkscore_queue_depth", "Requests waiting per model version", ["model", "version"],
                                 registry=r)
        self.batch_delay = Gauge("sparkscore_batch_delay_seconds", "Current AIMD queue-delay window",
                                 ["model", "version"], registry=r)
        self.loaded = Gauge("sparkscore_loaded_versions", "Model versions in memory", registry=r)
        self.loaded_bytes = Gauge("sparkscore_loaded_bytes", "Estimated memory of loaded versions", registry=r)
        self.reloads = Counter("sparkscore_route_moves", "Alias / latest routes moved by the watcher", registry=r)
        self.log_dropped = Counter("sparkscore_log_dropped", "Sampled requests the prediction log dropped (queue "
                                   "full, or not writable)", registry=r)
        self.log_written = Counter("sparkscore_log_written_rows", "Rows appended to the prediction log", registry=r)
        self.errors = Counter("sparkscore_errors", "Failed requests by kind", ["kind"], registry=r)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self._children: dict[tuple, object] = {}

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, looked up once: ``labels()`` costs ~10 µs a call, four per request.

        Only for series never removed (requests, latency, batch histograms), not the per-version gauges.
        """
        key = (id(metric), labels)
        hit = self._children.get(key)
        if hit is None:
            hit = self._children[key] = metric.labels(*labels)
        return hit

    def render(self) -> bytes:
        return generate_latest(self.registry)
