"""Prometheus metrics for the bot, in either mode: one call from ``__main__`` when a port is set.

    server = await monitoring.serve(service, port)   # /metrics and /healthz
    ...
    await server.close()

Counts what the service's events tell (admitted, done / failed by code / cancelled, painting
time) and samples what the service knows: the queue by state (in the scaled mode every bot's),
requests refused by kind, engine restarts (embedded), devices alive (the scaled mode: every
agent GPU), and the event loop's lag. ``/healthz`` answers 200 while the event loop ticks and
the engine is up (embedded) or Redis answers (scaled).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from bot.jobs import Cancelled, Failed, Finished, JobEvent, Queued, ServiceStatus
from bot.service import PaintService
from engine.metrics import Metrics, MetricsServer

SAMPLE_EVERY = 5.0


class BotMetrics:
    def __init__(self, service: PaintService, metrics: Metrics | None = None) -> None:
        self.service = service
        self.metrics = metrics or Metrics("bot")
        self._engine_up: float | None = None
        self._refused: Counter[str] = Counter()  # counted into the metrics so far
        self.healthy = True  # as last sampled (the HTTP thread reads this, never the service)

    async def on_event(self, event: JobEvent) -> None:
        """A service listener (``service.add_listener(bot_metrics.on_event)``)."""
        if isinstance(event, Queued):
            self.metrics.job_admitted()
        elif isinstance(event, Finished):
            self.metrics.job_finished("done", "", event.seconds)
        elif isinstance(event, Failed):
            self.metrics.job_finished("failed", event.code, event.job.seconds)
        elif isinstance(event, Cancelled):
            self.metrics.job_finished("cancelled")
        self.sample()

    def sample(self) -> None:
        status = self.service.status()
        self.healthy = healthy(status)
        self.metrics.set_queue(status.queue_length, status.running_jobs)
        if status.mode == "embedded":
            up_since = status.engine_up_since
            if self._engine_up is not None and up_since not in (self._engine_up, None):
                self.metrics.engine_restarted(status.engine_device or "engine")
            self._engine_up = up_since or self._engine_up
        self.metrics.set_devices_alive(status.devices_alive)
        refused = self.service.refused
        for kind, count in (refused - self._refused).items():
            self.metrics.refused.labels(self.metrics.role, kind).inc(count)
        self._refused = refused

    async def sample_loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY)


class MonitoringServer:
    def __init__(self, bot_metrics: BotMetrics, http: MetricsServer) -> None:
        self.bot_metrics = bot_metrics
        self.http = http
        self.port = http.port
        self._tasks = [
            asyncio.create_task(bot_metrics.metrics.watch_loop(), name="bot-loop-lag"),
            asyncio.create_task(bot_metrics.sample_loop(), name="bot-metrics-sample"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.http.close()


async def serve(service: PaintService, port: int, *, host: str = "0.0.0.0") -> MonitoringServer:
    """Count the service's events and serve /metrics and /healthz on ``port``."""
    bot_metrics = BotMetrics(service)
    service.add_listener(bot_metrics.on_event)
    bot_metrics.sample()
    http = bot_metrics.metrics.serve(port, host=host, health=lambda: bot_metrics.healthy)
    return MonitoringServer(bot_metrics, http)


def healthy(status: ServiceStatus) -> bool:
    """The engine is up (embedded), or Redis answers (scaled)."""
    if status.mode == "embedded":
        return status.engine_up_since is not None
    return not status.paused
