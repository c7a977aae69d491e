"""Prometheus metrics and a health check, for the bot and for each GPU-host agent.

One :class:`Metrics` per process, on a registry of its own (tests make many). Serving is off
unless a port is given; :meth:`Metrics.serve` starts a small threaded HTTP server with::

    GET /metrics   the Prometheus text format
    GET /healthz   200 "ok" while the event loop ticks and ``health()`` says so, else 503

:meth:`Metrics.watch_loop` is a task that measures event-loop lag (how late a short sleep wakes
up) and keeps the heartbeat that /healthz reads. Uses prometheus-client and the standard library
only, so the bot (embedded or scaled) and the agent share it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

QUEUE_STATES: Final = ("waiting", "running")
DURATION_BUCKETS: Final = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
LOOP_STALE: Final = 10.0  # seconds without a tick before /healthz says unhealthy


class Metrics:
    def __init__(self, role: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.role = role  # "bot" or "agent", a constant label on every series
        self.registry = CollectorRegistry()
        self._clock = clock
        self._last_tick: float | None = None
        r = self.registry
        self.queue = Gauge(
            "atelier_queue_jobs", "Jobs in the queue by state", ["role", "state"], registry=r
        )
        self.admitted = Counter("atelier_jobs_admitted", "Jobs admitted", ["role"], registry=r)
        self.refused = Counter(
            "atelier_jobs_refused", "Requests refused, by reason", ["role", "reason"], registry=r
        )
        self.finished = Counter(
            "atelier_jobs_finished",
            "Jobs finished, by outcome (done, failed, cancelled) and reason (failure code)",
            ["role", "outcome", "reason"],
            registry=r,
        )
        self.requeued = Counter(
            "atelier_jobs_requeued", "Jobs put back in the queue, by reason", ["role", "reason"],
            registry=r,
        )  # fmt: skip
        self.late_results = Counter(
            "atelier_late_results_refused",
            "Results refused because the host's lease had been taken",
            ["role"],
            registry=r,
        )
        self.duration = Histogram(
            "atelier_job_seconds",
            "Painting time of finished jobs",
            ["role", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.engine_restarts = Counter(
            "atelier_engine_restarts", "Engine processes restarted", ["role", "device"], registry=r
        )
        self.devices_alive = Gauge(
            "atelier_devices_alive", "Engine devices alive (all hosts)", ["role"], registry=r
        )
        self.loop_lag = Gauge(
            "atelier_event_loop_lag_seconds", "Event-loop lag, last measured", ["role"], registry=r
        )
        self.loop_lag_max = Gauge(
            "atelier_event_loop_lag_max_seconds", "Worst event-loop lag seen", ["role"], registry=r
        )

    # -- recording -----------------------------------------------------------------------------

    def set_queue(self, waiting: int, running: int) -> None:
        self.queue.labels(self.role, "waiting").set(waiting)
        self.queue.labels(self.role, "running").set(running)

    def job_admitted(self) -> None:
        self.admitted.labels(self.role).inc()

    def job_refused(self, reason: str) -> None:
        self.refused.labels(self.role, reason).inc()

    def job_finished(self, outcome: str, reason: str = "", seconds: float | None = None) -> None:
        self.finished.labels(self.role, outcome, reason).inc()
        if seconds is not None:
            self.duration.labels(self.role, outcome).observe(seconds)

    def job_requeued(self, reason: str) -> None:
        self.requeued.labels(self.role, reason).inc()

    def late_result(self) -> None:
        self.late_results.labels(self.role).inc()

    def engine_restarted(self, device: str) -> None:
        self.engine_restarts.labels(self.role, device).inc()

    def set_devices_alive(self, count: int) -> None:
        self.devices_alive.labels(self.role).set(count)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    # -- the event loop ------------------------------------------------------------------------

    async def watch_loop(self, interval: float = 0.5) -> None:
        """Run as a task: measure lag every ``interval`` and keep the heartbeat fresh."""
        worst = 0.0
        while True:
            before = self._clock()
            self._last_tick = before
            await asyncio.sleep(interval)
            lag = max(0.0, self._clock() - before - interval)
            worst = max(worst, lag)
            self.loop_lag.labels(self.role).set(lag)
            self.loop_lag_max.labels(self.role).set(worst)

    def loop_alive(self) -> bool:
        """True while :meth:`watch_loop` ticks (or before it has started)."""
        return self._last_tick is None or self._clock() - self._last_tick < LOOP_STALE

    # -- serving -------------------------------------------------------------------------------

    def serve(
        self, port: int, *, host: str = "0.0.0.0", health: Callable[[], bool] = lambda: True
    ) -> MetricsServer:
        """Start serving /metrics and /healthz in a daemon thread; port 0 picks a free one."""
        server = MetricsServer(self, host, port, health)
        server.start()
        return server


class MetricsServer:
    def __init__(self, metrics: Metrics, host: str, port: int, health: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._health = health
        self._http = ThreadingHTTPServer((host, port), self._handler())
        self._http.daemon_threads = True
        self.port: int = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="metrics-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on port %d (/metrics, /healthz)", self.port)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def healthy(self) -> bool:
        try:
            return self._metrics.loop_alive() and self._health()
        except Exception:
            log.exception("health check failed")
            return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, server._metrics.text(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = server.healthy()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
                else:
                    self._reply(404, b"not found\n")

            def _reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics http: " + format, *args)

        return Handler
