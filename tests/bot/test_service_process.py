"""The paint service around a real spawned engine process.

Most tests run ``tests.fakes.fake_worker``, a scripted engine process without torch (the seed
option picks crash, crash-once or hang). One runs the real engine worker with random VGG-19
weights on 64 px images, end to end.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from PIL import Image

from bot.jobs import Failed, Finished, JobState, PaintRequest, Progress, Started
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from bot.styles import StyleLibrary
from engine import protocol
from engine.client import EngineClient, JobOutcome, JobUpdate
from engine.protocol import PaintOptions
from tests.bot.test_service import Recorder
from tests.fakes import (
    SEED_CRASH_ALWAYS,
    SEED_CRASH_ONCE,
    SEED_HANG,
    FakeTime,
    fake_worker,
    jpeg_bytes,
    png_bytes,
)


def service_with_process(tmp_path: Path, limits: Limits) -> tuple[PaintService, Store]:
    store = Store.open(tmp_path / "data" / "atelier.sqlite3")
    client = EngineClient(protocol.EngineConfig(), target=fake_worker)
    service = PaintService(
        store=store, engine=client, limits=limits, data_dir=tmp_path / "data", clock=FakeTime()
    )
    return service, store


def request(user: str, seed: int | None = None) -> PaintRequest:
    return PaintRequest(
        platform="telegram",
        chat_id="chat",
        user_id=user,
        user_name=user,
        photo=png_bytes((64, 48)),
        painting=jpeg_bytes((50, 50)),
        options=PaintOptions(seed=seed),
    )


async def test_service_survives_crashes_and_poison_jobs_with_a_real_process(
    tmp_path: Path,
) -> None:
    service, store = service_with_process(tmp_path, Limits())
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        once = await service.submit(request("a", seed=SEED_CRASH_ONCE))
        poison = await service.submit(request("b", seed=SEED_CRASH_ALWAYS))
        fine = await service.submit(request("c"))
        await recorder.wait_for(once.id, Finished)
        failed = await recorder.wait_for(poison.id, Failed)
        await recorder.wait_for(fine.id, Finished)
    assert isinstance(failed, Failed) and failed.code == "engine_crashed"
    reruns = [e for e in recorder.of(once.id, Started) if isinstance(e, Started) and e.rerun]
    assert len(reruns) == 1  # the member is told it runs again
    assert store.get_job(once.id).attempts == 2  # type: ignore[union-attr]
    assert store.get_job(poison.id).crashes == 2  # type: ignore[union-attr]
    assert store.get_job(fine.id).state is JobState.DONE  # type: ignore[union-attr]
    store.close()


async def test_a_hanging_job_is_failed_at_the_time_limit(tmp_path: Path) -> None:
    service, store = service_with_process(tmp_path, Limits(job_timeout=1.0))
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        hang = await service.submit(request("a", seed=SEED_HANG))
        after = await service.submit(request("b"))
        failed = await recorder.wait_for(hang.id, Failed)
        await recorder.wait_for(after.id, Finished)
    assert isinstance(failed, Failed) and failed.code == "timeout"
    assert store.jobs_in([JobState.RUNNING]) == []
    store.close()


@pytest.mark.slow
async def test_real_engine_paints_end_to_end(tmp_path: Path, vgg_weights_path: Path) -> None:
    store = Store.open(tmp_path / "data" / "atelier.sqlite3")
    client = EngineClient(protocol.EngineConfig(device="cpu", weights=str(vgg_weights_path)))
    service = PaintService(
        store=store,
        engine=client,
        limits=Limits(),
        data_dir=tmp_path / "data",
        preview_seconds=0.001,
    )
    recorder = Recorder()
    service.add_listener(recorder)
    photo = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    async with service:
        job = await service.submit(
            PaintRequest(
                platform="discord",
                chat_id="c",
                user_id="u",
                user_name="u",
                photo=buffer.getvalue(),
                painting=jpeg_bytes((64, 64), (200, 30, 30)),
                options=PaintOptions(quality="draft", seed=1),
            )
        )
        done = await recorder.wait_for(job.id, (Finished, Failed), within=240)
    assert client.device == "cpu"
    assert isinstance(done, Finished)
    result = Image.open(io.BytesIO(done.result_png))
    assert result.size == (64, 48)
    progress = [e for e in recorder.of(job.id, Progress) if isinstance(e, Progress)]
    percents = [e.percent for e in progress]
    assert percents == sorted(percents) and percents[-1] == pytest.approx(100)
    assert any(e.preview_jpeg for e in progress)
    store.close()


class RecordingClient(EngineClient):
    """The real client, keeping what the engine answered for each job."""

    outcomes: list[JobOutcome]

    async def run_batch(
        self,
        jobs: Sequence[protocol.PaintJob],
        on_update: Callable[[JobUpdate], None],
        on_outcome: Callable[[JobOutcome], None],
    ) -> None:
        def keep(outcome: JobOutcome) -> None:
            self.outcomes.append(outcome)
            on_outcome(outcome)

        await super().run_batch(jobs, on_update, keep)


@pytest.mark.slow
async def test_a_library_style_is_warm_in_the_real_engine_before_its_first_job(
    tmp_path: Path, vgg_weights_path: Path
) -> None:
    """A saved style is pinned in the engine process (random VGG-19 weights), its targets are
    computed while the engine is idle, and the first painting in that style finds all of them
    in the cache."""
    data = tmp_path / "data"
    store = Store.open(data / "atelier.sqlite3")
    client = RecordingClient(protocol.EngineConfig(device="cpu", weights=str(vgg_weights_path)))
    client.outcomes = []
    service = PaintService(store=store, engine=client, limits=Limits(), data_dir=data)
    library = StyleLibrary(
        store=store,
        data_dir=data,
        check=service.check_image,
        keep_warm=client,
        warm_quality="draft",
    )
    recorder = Recorder()
    service.add_listener(recorder)
    # The draft preset paints at 256 px on the long side on a CPU; a long, low photo keeps
    # the painting quick (style targets depend on the long side only).
    photo = Image.linear_gradient("L").resize((256, 64)).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    async with service:
        style = await library.add(
            platform="telegram",
            community_id="-100",
            name="red",
            painting=jpeg_bytes((96, 96), (200, 30, 30)),
            painting_name="red.jpg",
            added_by="1",
            added_by_name="Ada",
        )
        await asyncio.wait_for(client.warmed(style.painting_path), 120)
        job = await service.submit(
            PaintRequest(
                platform="telegram",
                chat_id="-100",
                user_id="2",
                user_name="Bob",
                photo=buffer.getvalue(),
                painting=await library.painting(style),  # the job's own copy of it
                options=PaintOptions(quality="draft", seed=1),
                painting_name=style.name,
            )
        )
        done = await recorder.wait_for(job.id, (Finished, Failed), within=240)
    assert isinstance(done, Finished)
    [outcome] = client.outcomes
    assert isinstance(outcome, protocol.JobDone)
    assert outcome.style_hits >= 1 and outcome.style_misses == 0
    store.close()


def test_the_bot_side_never_imports_torch() -> None:
    code = (
        "import sys; import bot.service, engine.client, bot.store, engine.worker, "
        "engine.images; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
