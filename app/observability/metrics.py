"""Prometheus metrics, correct under several gunicorn workers.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the
workers fork; prometheus_client then keeps every worker's values in files there, and `/metrics`
(served by any one worker) adds them up. Without it (tests, `flask run`) one plain registry is
used.

Requests, transitions and committed events are counted where they happen. The hub and the broker
(app/realtime) keep their own counters as attributes; `sync()` copies them into the metrics: at
every scrape, after requests (at most once a second) and, under multiprocess mode, every few
seconds from a background loop in each worker, so the sum over workers is never more than a few
seconds old.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

SYNC_SECONDS = 5.0

disable_created_metrics()  # no *_created series: they double the output and say little here

REQUESTS = Counter(
    "trackopz_http_requests_total",
    "HTTP requests answered, by Flask endpoint, method and status.",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "trackopz_http_request_duration_seconds",
    "Time to answer an HTTP request (an event stream: time to open it), by endpoint, method and status.",
    ["endpoint", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TRANSITIONS = Counter(
    "trackopz_transitions_total",
    "Committed state transitions (Transition rows), by action.",
    ["action"],
)
EVENTS_COMMITTED = Counter(
    "trackopz_events_committed_total",
    "Events committed to the outbox (the events table), by type.",
    ["type"],
)
EVENTS_PUBLISHED = Counter(
    "trackopz_events_published_total",
    "Committed events handed to the broker (Redis or in-process).",
)
PUBLISH_FAILURES = Counter(
    "trackopz_event_publish_failures_total",
    "Publishes to Redis that failed (the events wait in the outbox backlog and are retried).",
)
EVENTS_DELIVERED = Counter(
    "trackopz_events_delivered_total",
    "Event deliveries to stream clients (one per event per connected client).",
)
SLOW_DROPPED = Counter(
    "trackopz_stream_clients_dropped_slow_total",
    "Stream clients disconnected because they fell behind (their queue was full).",
)
REDIS_RECONNECTS = Counter(
    "trackopz_redis_reconnects_total", "Times a worker's Redis subscription was lost and retried."
)
GAP_FILLS = Counter(
    "trackopz_hub_gap_fills_total", "Times a hub read missing events from the events table."
)
OUTBOX_BACKLOG = Gauge(
    "trackopz_outbox_backlog",
    "Events committed but not yet published (waiting for Redis), summed over workers.",
    multiprocess_mode="livesum",
)
STREAM_CLIENTS = Gauge(
    "trackopz_stream_clients",
    "Open event streams, summed over live workers.",
    multiprocess_mode="livesum",
)
HUB_UNSUBSCRIBED = Gauge(
    "trackopz_hub_workers_unsubscribed",
    "Live workers whose hub is started but holds no Redis subscription (0 when all is well).",
    multiprocess_mode="livesum",
)
DB_POOL_CHECKED_OUT = Gauge(
    "trackopz_db_pool_checked_out",
    "Database connections in use (SQLAlchemy pool checkedout()), summed over live workers.",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "trackopz_db_pool_size",
    "Database connections the pools keep (pool_size, without overflow), summed over live workers.",
    multiprocess_mode="livesum",
)

# attribute of hub/broker -> the counter it feeds
_HUB_COUNTERS = {
    "delivered_total": EVENTS_DELIVERED,
    "dropped_slow": SLOW_DROPPED,
    "redis_reconnects": REDIS_RECONNECTS,
    "gap_fills": GAP_FILLS,
}
_BROKER_COUNTERS = {"published_total": EVENTS_PUBLISHED, "publish_failures": PUBLISH_FAILURES}


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Sync:
    """Copies the hub's and broker's attributes into the metrics (counters by their increase)."""

    def __init__(self) -> None:
        self.app = None
        self._seen: dict[str, float] = {}
        self._pid = None
        self._last = 0.0
        self._lock = threading.Lock()
        self._loop = None

    def bind(self, app) -> None:
        """The app whose database pool is reported (the last one made, in a test run)."""
        self.app = app

    def _pool(self):
        from flask import has_app_context

        from app.extensions import db

        if has_app_context():
            return db.engine.pool
        if self.app is None:
            return None
        with self.app.app_context():
            return db.engine.pool

    def __call__(self) -> None:
        from app.extensions import broker, hub

        with self._lock:
            if self._pid != os.getpid():  # a forked child starts from its own zero
                self._pid, self._seen = os.getpid(), {}
            for name, counter in _HUB_COUNTERS.items():
                self._advance(("hub", name), getattr(hub, name, 0), counter)
            for name, counter in _BROKER_COUNTERS.items():
                self._advance(("broker", name), getattr(broker, name, 0), counter)
            OUTBOX_BACKLOG.set(len(broker.unpublished))
            STREAM_CLIENTS.set(len(hub.clients))
            HUB_UNSUBSCRIBED.set(1 if (hub.started and not hub.subscribed) else 0)
            pool = self._pool()
            if pool is not None and hasattr(pool, "checkedout"):
                DB_POOL_CHECKED_OUT.set(pool.checkedout())
                DB_POOL_SIZE.set(pool.size())
            self._last = time.monotonic()

    def _advance(self, key, value, counter) -> None:
        value = value or 0
        before = self._seen.get(key, 0)
        if value < before:  # the source was reset: count it again from zero
            before = 0
        if value > before:
            counter.inc(value - before)
        self._seen[key] = value

    def soon(self) -> None:
        """After a request: sync when the last one is over a second old; start the loop."""
        if multiprocess() and (self._loop is None or self._loop[0] != os.getpid()):
            self._start_loop()
        if time.monotonic() - self._last >= 1.0:
            self()

    def _start_loop(self) -> None:
        # threading.Thread is a greenlet once gevent has patched the worker.
        thread = threading.Thread(target=self._run, name="trackopz-metrics", daemon=True)
        self._loop = (os.getpid(), thread)
        thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(SYNC_SECONDS)
            try:
                self()
            except Exception:  # never let the loop die: the next round may work
                log.exception("metrics sync failed")


sync = Sync()


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """What a scrape gets (the format its Accept header asks for, plain text by default): every
    worker's values under multiprocess mode, else this process's."""
    sync()
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def count_request(endpoint: str, method: str, status: int, seconds: float | None) -> None:
    labels = (endpoint, method, str(status))
    REQUESTS.labels(*labels).inc()
    if seconds is not None:
        LATENCY.labels(*labels).observe(seconds)
