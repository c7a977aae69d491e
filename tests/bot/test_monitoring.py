"""The bot's metrics, embedded and scaled: one call, then /metrics and /healthz over HTTP."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bot import errors, monitoring
from bot.jobs import Failed, Finished, PaintRequest
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from tests.bot.test_service import Recorder
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes, png_bytes
from tests.redis_server import RedisServer


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()


async def test_one_call_serves_the_services_metrics(store: Store, data_dir: Path) -> None:
    engine = FakeEngine(auto=False)
    service = PaintService(
        store=store, engine=engine, limits=Limits(), data_dir=data_dir, clock=FakeTime()
    )
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        server = await monitoring.serve(service, 0, host="127.0.0.1")
        try:
            request = PaintRequest("discord", "c", "a", "a", png_bytes(), jpeg_bytes())
            good = await service.submit(request)
            engine.finish(await engine.wait_started(good.id), seconds=4.0)
            await recorder.wait_for(good.id, Finished)
            bad = await service.submit(request)
            engine.fail(await engine.wait_started(bad.id), code="bad_image")
            await recorder.wait_for(bad.id, Failed)
            await service.drained()
            text = await asyncio.to_thread(get, server.port, "/metrics")
            assert 'atelier_jobs_admitted_total{role="bot"} 2.0' in text
            assert 'atelier_jobs_finished_total{outcome="done",reason="",role="bot"} 1.0' in text
            assert (
                'atelier_jobs_finished_total{outcome="failed",reason="bad_image",role="bot"} 1.0'
                in text
            )
            assert 'atelier_job_seconds_count{outcome="done",role="bot"} 1.0' in text
            assert 'atelier_queue_jobs{role="bot",state="waiting"} 0.0' in text
            assert 'atelier_devices_alive{role="bot"} 1.0' in text
            assert await asyncio.to_thread(get, server.port, "/healthz") == "ok\n"
        finally:
            await server.close()


async def test_refusals_queue_devices_and_health_in_the_scaled_mode(
    redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    from tests.bot.test_service_scaled import Bot, request

    bot = Bot(redis_url, tmp_path / "bot1", limits=Limits(per_member=1))
    await bot.service.start()
    server = await monitoring.serve(bot.service, 0, host="127.0.0.1")
    try:
        for device in ("A:cuda:0", "B:cuda:0"):
            await bot.queue.jobs.set_alive(device, {}, ttl=30)
        await bot.queue.refresh()
        await bot.service.submit(request("a"))
        with pytest.raises(errors.LimitReached):
            await bot.service.submit(request("a"))
        await bot.service.drained()
        text = await asyncio.to_thread(get, server.port, "/metrics")
        assert 'atelier_jobs_admitted_total{role="bot"} 1.0' in text
        assert 'atelier_jobs_refused_total{reason="LimitReached",role="bot"} 1.0' in text
        assert 'atelier_queue_jobs{role="bot",state="waiting"} 1.0' in text
        assert 'atelier_devices_alive{role="bot"} 2.0' in text
        assert await asyncio.to_thread(get, server.port, "/healthz") == "ok\n"
        redis_server.stop()  # Redis goes away: new paintings are paused, the bot is unhealthy
        with pytest.raises(errors.Paused):
            await bot.service.submit(request("b"))
        server.bot_metrics.sample()
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            await asyncio.to_thread(get, server.port, "/healthz")
        assert unhealthy.value.code == 503
        text = await asyncio.to_thread(get, server.port, "/metrics")
        assert 'atelier_jobs_refused_total{reason="Paused",role="bot"} 1.0' in text
        assert 'atelier_devices_alive{role="bot"} 0.0' in text
    finally:
        if redis_server.pid is None:
            redis_server.start()
        await server.close()
        await bot.close()
