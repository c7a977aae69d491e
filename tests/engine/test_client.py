"""The engine client around real spawned processes.

The tests run ``tests.fakes.fake_worker``, a scripted engine process without torch (the seed
option picks crash or hang), and check what the client makes of a missing weights file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine import protocol
from engine.client import EngineClient, EngineCrashed, EngineUnavailable, JobOutcome, JobUpdate
from engine.protocol import PaintOptions
from tests.fakes import (
    SEED_CRASH_ALWAYS,
    SEED_HANG,
    fake_batching_worker,
    fake_worker,
    jpeg_bytes,
    png_bytes,
)


def paint_job(tmp_path: Path, job_id: str = "j1", seed: int | None = None) -> protocol.PaintJob:
    photo, painting = tmp_path / "photo.png", tmp_path / "painting.jpg"
    photo.write_bytes(png_bytes((64, 48)))
    painting.write_bytes(jpeg_bytes((50, 50)))
    return protocol.PaintJob(
        job_id=job_id,
        photo_path=str(photo),
        painting_path=str(painting),
        result_path=str(tmp_path / f"{job_id}.png"),
        options=PaintOptions(seed=seed),
    )


async def test_runs_a_job_in_a_spawned_process(tmp_path: Path) -> None:
    client = EngineClient(protocol.EngineConfig(), target=fake_worker)
    await client.start()
    try:
        assert client.pid is not None and client.device == "fake"
        updates: list[JobUpdate] = []
        outcome = await client.run(paint_job(tmp_path), updates.append)
        assert isinstance(outcome, protocol.JobDone)
        assert Path(outcome.result_path).read_bytes().startswith(b"\x89PNG")
        assert isinstance(updates[0], protocol.JobStarted)
        steps = [u.step for u in updates if isinstance(u, protocol.JobProgress)]
        assert steps == [1, 2, 3, 4, 5]
    finally:
        await client.close()
    assert client.up_since is None


async def test_a_batch_is_one_message_and_each_job_ends_on_its_own(tmp_path: Path) -> None:
    client = EngineClient(protocol.EngineConfig(), target=fake_batching_worker)
    await client.start()
    try:
        assert client.max_batch == 4  # as the engine said in EngineReady
        jobs = [paint_job(tmp_path, job_id) for job_id in ("j1", "j2", "j3")]
        updates: list[JobUpdate] = []
        outcomes: list[JobOutcome] = []

        def on_update(update: JobUpdate) -> None:
            updates.append(update)
            if isinstance(update, protocol.JobProgress) and update.job_id == "j2":
                asyncio.get_running_loop().create_task(client.cancel("j2"))

        await asyncio.wait_for(client.run_batch(jobs, on_update, outcomes.append), 10)
        kinds = {outcome.job_id: type(outcome) for outcome in outcomes}
        assert kinds == {
            "j1": protocol.JobDone,
            "j2": protocol.JobCancelled,
            "j3": protocol.JobDone,
        }
        assert outcomes[0].job_id == "j2"  # told as soon as it ended, before the others
        for job_id in ("j1", "j3"):
            steps = [
                u.step
                for u in updates
                if isinstance(u, protocol.JobProgress) and u.job_id == job_id
            ]
            assert steps == [1, 2, 3, 4, 5]
    finally:
        await client.close()


async def test_a_dead_engine_is_noticed_and_restarted(tmp_path: Path) -> None:
    client = EngineClient(protocol.EngineConfig(), target=fake_worker)
    await client.start()
    first_pid = client.pid
    try:
        with pytest.raises(EngineCrashed, match="exit code 3"):
            await asyncio.wait_for(
                client.run(paint_job(tmp_path, seed=SEED_CRASH_ALWAYS), lambda u: None), 10
            )
        await client.restart()
        assert client.pid != first_pid
        outcome = await client.run(paint_job(tmp_path, "j2"), lambda u: None)
        assert isinstance(outcome, protocol.JobDone)
    finally:
        await client.close()


async def test_killed_from_outside_mid_job(tmp_path: Path) -> None:
    client = EngineClient(protocol.EngineConfig(), target=fake_worker)
    await client.start()
    try:
        run = asyncio.create_task(client.run(paint_job(tmp_path, seed=SEED_HANG), lambda u: None))
        await asyncio.sleep(0.2)  # let the job reach the process
        client.kill()  # as the OOM killer would
        with pytest.raises(EngineCrashed):
            await asyncio.wait_for(run, 10)
    finally:
        await client.close()


async def test_engine_that_cannot_start_says_why() -> None:
    client = EngineClient(protocol.EngineConfig(weights="/nonexistent/vgg19.pth"))
    with pytest.raises(EngineUnavailable) as caught:
        await client.start()
    assert caught.value.code == "weights_missing"
    assert "/nonexistent/vgg19.pth" in caught.value.message


async def test_pins_are_sent_at_every_start_and_warm_ups_are_noted_between_jobs(
    tmp_path: Path,
) -> None:
    """A pin made before the engine runs goes out once it is ready, again after a restart
    (a new process has none), and not after it was unpinned. The scripted worker notes each
    pin it receives beside the painting and answers with StyleWarmed."""
    kept, dropped = tmp_path / "kept.png", tmp_path / "dropped.png"
    for path in (kept, dropped):
        path.write_bytes(png_bytes())
    client = EngineClient(protocol.EngineConfig(), target=fake_worker)
    client.pin_style(str(kept), "draft")
    client.pin_style(str(dropped))
    await client.start()
    try:
        await asyncio.wait_for(client.warmed(str(kept)), 10)
        await asyncio.wait_for(client.warmed(str(dropped)), 10)
        client.unpin_style(str(dropped))
        # Jobs go through as usual (the worker takes messages in order: the unpin first).
        done = await client.run(paint_job(tmp_path), lambda u: None)
        assert isinstance(done, protocol.JobDone)
        first = client.pid
        client.kill()
        with pytest.raises(EngineCrashed):  # the death shows at the next job
            await asyncio.wait_for(client.run(paint_job(tmp_path), lambda u: None), 10)
        await client.restart()
        await asyncio.wait_for(client.warmed(str(kept)), 10)
        outcome = await client.run(paint_job(tmp_path, "j2"), lambda u: None)
        assert isinstance(outcome, protocol.JobDone)
    finally:
        await client.close()
    second = client.pid
    assert client.pinned == {str(kept): "draft"}
    assert (tmp_path / "kept.png.pins").read_text().split("\n")[:-1] == [
        f"PinStyle {first}",
        f"PinStyle {second}",
    ]
    assert (tmp_path / "dropped.png.pins").read_text().split("\n")[:-1] == [
        f"PinStyle {first}",
        f"UnpinStyle {first}",
    ]
