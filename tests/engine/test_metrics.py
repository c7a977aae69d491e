"""The metrics module: its series, /metrics and /healthz over real HTTP, the loop-lag watch."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from engine.metrics import Metrics
from tests.fakes import FakeTime


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_series_and_endpoints() -> None:
    healthy = [True]
    metrics = Metrics("bot")
    metrics.job_admitted()
    metrics.job_refused("LimitReached")
    metrics.job_finished("failed", "timeout", seconds=12.0)
    metrics.job_requeued("host_lost")
    metrics.engine_restarted("cuda:0")
    metrics.set_queue(waiting=4, running=2)
    metrics.set_devices_alive(3)
    server = metrics.serve(0, host="127.0.0.1", health=lambda: healthy[0])
    try:
        status, text = get(server.port, "/metrics")
        assert status == 200
        for line in (
            'atelier_jobs_admitted_total{role="bot"} 1.0',
            'atelier_jobs_refused_total{reason="LimitReached",role="bot"} 1.0',
            'atelier_jobs_finished_total{outcome="failed",reason="timeout",role="bot"} 1.0',
            'atelier_job_seconds_bucket{le="20.0",outcome="failed",role="bot"} 1.0',
            'atelier_jobs_requeued_total{reason="host_lost",role="bot"} 1.0',
            'atelier_engine_restarts_total{device="cuda:0",role="bot"} 1.0',
            'atelier_queue_jobs{role="bot",state="waiting"} 4.0',
            'atelier_queue_jobs{role="bot",state="running"} 2.0',
            'atelier_devices_alive{role="bot"} 3.0',
        ):
            assert line in text
        assert get(server.port, "/healthz") == (200, "ok\n")
        healthy[0] = False
        assert get(server.port, "/healthz") == (503, "unhealthy\n")
        assert get(server.port, "/other")[0] == 404
    finally:
        server.close()


async def test_loop_lag_is_measured_and_a_stuck_loop_is_unhealthy() -> None:
    clock = FakeTime(100.0)
    metrics = Metrics("agent", clock=clock)
    assert metrics.loop_alive()  # not watched yet
    watch = asyncio.create_task(metrics.watch_loop(interval=0.01))
    await asyncio.sleep(0)  # the first tick
    clock.advance(0.26)  # the loop "was blocked" for a quarter second
    await asyncio.sleep(0.02)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    text = metrics.text().decode()
    assert 'atelier_event_loop_lag_max_seconds{role="agent"} 0.25' in text
    assert metrics.loop_alive()
    clock.advance(60)  # no tick for a minute
    assert not metrics.loop_alive()


def test_port_in_use_is_an_error() -> None:
    first = Metrics("bot").serve(0, host="127.0.0.1")
    try:
        with pytest.raises(OSError, match="in use"):
            Metrics("bot").serve(first.port, host="127.0.0.1")
    finally:
        first.close()
