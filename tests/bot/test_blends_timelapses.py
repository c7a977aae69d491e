"""Blends of two paintings and timelapses in the paint service (fake engine, real SQLite).

What the platforms build on: a blend's second painting is checked, stored by content hash and
kept on the job (re-rolls keep the blend); every job asks the engine for a timelapse, whose
files live and die with the result (the sweep and Delete take them), and asking for one after
the retention period, after Delete or when none was made says why.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot import errors, replies
from bot.jobs import Finished, JobState, PaintRequest
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from engine.protocol import PaintOptions, timelapse_paths
from tests.bot.test_service import Recorder, make_service, request
from tests.fakes import TIMELAPSE_MP4, TIMELAPSE_WEBP, FakeEngine, FakeTime, jpeg_bytes

WAVES = jpeg_bytes((60, 40), (20, 200, 120))


def blend(user: str = "u1", percent: int = 30, second: bytes = WAVES) -> PaintRequest:
    return replace(request(user, blend=percent), painting2=second, painting2_name="waves.jpg")


async def test_a_blend_reaches_the_engine_with_its_second_painting_and_a_timelapse(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock)
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        job = await service.submit(blend())
        await engine.wait_started(job.id)
        (sent,) = engine.seen
        assert sent.timelapse  # every job asks for one
        assert sent.painting2_path == job.painting2_path
        assert sent.options.blend == 30
        assert Path(job.painting2_path or "").read_bytes() == WAVES
        assert Path(job.painting2_path or "").parent == data_dir / "inputs"
        assert job.blended_with == "waves.jpg"
        assert replies.summary(job.options, job.blended_with).endswith("· blend 30% with waves.jpg")
        engine.finish(job.id)
        finished = await recorder.wait_for(job.id, Finished)
    assert isinstance(finished, Finished) and finished.timelapse
    stored = store.get_job(job.id)
    assert stored is not None and stored.painting2_path == job.painting2_path
    assert stored.painting2_name == "waves.jpg"


async def test_a_second_painting_is_checked_like_the_first(
    service: PaintService, store: Store, data_dir: Path
) -> None:
    with pytest.raises(errors.InvalidImage, match="second painting"):
        await service.submit(blend(second=b"not an image at all"))
    assert store.count_by_state() == {}
    assert list((data_dir / "inputs").iterdir()) == []  # nothing kept of a refused request


async def test_a_reroll_of_a_blend_keeps_the_blend(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock)
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        job = await service.submit(blend(percent=70))
        await engine.wait_started(job.id)
        engine.finish(job.id)
        await recorder.wait_for(job.id, Finished)
        again = await service.reroll(job.id, user_id="u1", user_name="x", change="stronger")
        await engine.wait_started(again.id)
    assert again.painting2_path == job.painting2_path
    assert again.painting2_name == "waves.jpg"
    assert again.options.blend == 70 and again.options.strength == job.options.strength + 2
    assert engine.seen[-1].painting2_path == job.painting2_path


async def test_a_timelapse_is_there_for_the_retention_period_then_goes_with_the_result(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(), data_dir, clock, Limits(retention_hours=1))
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        job = await service.submit(blend())
        await recorder.wait_for(job.id, Finished)
        done = service.get(job.id)
        assert (
            await service.timelapse(job.id, "webp", platform=job.platform, chat_id=job.chat_id)
            == TIMELAPSE_WEBP
        )
        assert (
            await service.timelapse(job.id, "mp4", platform=job.platform, chat_id=job.chat_id)
            == TIMELAPSE_MP4
        )
        # Asked from any other chat (a forged button press): as if there were none.
        other = "telegram" if job.platform == "discord" else "discord"
        for platform, chat_id in ((job.platform, "elsewhere"), (other, job.chat_id)):
            with pytest.raises(errors.NotAvailable) as elsewhere:
                await service.timelapse(job.id, "webp", platform=platform, chat_id=chat_id)
            assert elsewhere.value.message == replies.NO_TIMELAPSE_HERE
        files = timelapse_paths(done.result_path or "")
        clock.advance(3601)
        # Past the retention period, before the hourly sweep has run: already not given.
        with pytest.raises(errors.NotAvailable) as expired:
            await service.timelapse(job.id, "mp4", platform=job.platform, chat_id=job.chat_id)
        assert expired.value.message == (
            "Timelapses are kept for 1 hour after a painting is finished, and this one's time "
            "is up."
        )
        assert await service.purge_expired() == 1
        assert not Path(files.webp).exists() and not Path(files.mp4).exists()
        assert not Path(done.result_path or "").exists()
        # The blend's second painting went with the other inputs: no kept job uses it.
        assert not Path(done.painting2_path or "").exists()
        with pytest.raises(errors.NotAvailable, match="time is up"):
            await service.timelapse(job.id, "webp", platform=job.platform, chat_id=job.chat_id)
        clock.advance(40 * 24 * 3600)
        await service.purge_expired()  # the record is forgotten too
        with pytest.raises(errors.NotAvailable, match="time is up"):
            await service.timelapse(job.id, "webp", platform=job.platform, chat_id=job.chat_id)


async def test_delete_takes_the_timelapse_and_keeps_a_second_painting_still_in_use(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(), data_dir, clock, Limits(per_member=2))
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        first = await service.submit(blend())
        await recorder.wait_for(first.id, Finished)
        second = await service.submit(blend(percent=60))
        await recorder.wait_for(second.id, Finished)
        assert second.painting2_path == first.painting2_path  # stored once by content hash
        done = service.get(first.id)
        files = timelapse_paths(done.result_path or "")
        await service.delete_result(first.id, user_id="u1")
        assert not Path(files.webp).exists() and not Path(files.mp4).exists()
        assert Path(first.painting2_path or "").is_file()  # the second job still uses it
        with pytest.raises(errors.NotAvailable) as deleted:
            await service.timelapse(
                first.id, "webp", platform=first.platform, chat_id=first.chat_id
            )
        assert deleted.value.message == replies.TIMELAPSE_DELETED
        await service.delete_result(second.id, user_id="u1")
        assert not Path(first.painting2_path or "").exists()


async def test_no_timelapse_when_the_engine_could_not_make_one_or_before_the_end(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock)
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        job = await service.submit(request())
        await engine.wait_started(job.id)
        with pytest.raises(errors.NotAvailable) as early:
            await service.timelapse(job.id, "webp", platform=job.platform, chat_id=job.chat_id)
        assert early.value.message == replies.NO_TIMELAPSE_YET
        engine.finish(job.id, timelapse=False)
        finished = await recorder.wait_for(job.id, Finished)
        assert isinstance(finished, Finished) and not finished.timelapse  # no button shown
        with pytest.raises(errors.NotAvailable) as missing:
            await service.timelapse(job.id, "mp4", platform=job.platform, chat_id=job.chat_id)
        assert missing.value.message == replies.NO_TIMELAPSE
    assert service.get(job.id).state is JobState.DONE


async def test_a_painting_announced_again_after_a_restart_still_offers_its_timelapse(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(), data_dir, clock)
    first = Recorder()
    service.add_listener(first, delivers="discord")  # and never says it was posted
    async with service:
        job = await service.submit(request())
        await first.wait_for(job.id, Finished)
    # Not delivered before the stop: the next start hands it out again, read from its files.
    again = make_service(store, FakeEngine(), data_dir, clock)
    recorder = Recorder()
    again.add_listener(recorder, delivers="discord")
    async with again:
        finished = await recorder.wait_for(job.id, Finished)
    assert isinstance(finished, Finished) and finished.timelapse
    assert finished.job.options == PaintOptions()


async def test_a_timelapse_whose_post_failed_may_be_asked_for_again_at_once(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(), data_dir, clock)
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        job = await service.submit(request())
        await recorder.wait_for(job.id, Finished)
        where = {"platform": job.platform, "chat_id": job.chat_id}
        with pytest.raises(ConnectionError):
            async with service.posting_timelapse(job.id, "webp", **where):
                raise ConnectionError("the upload failed")
        async with service.posting_timelapse(job.id, "webp", **where) as data:
            assert data == TIMELAPSE_WEBP
        with pytest.raises(errors.NotAvailable) as again:
            async with service.posting_timelapse(job.id, "mp4", **where):
                pass
        assert again.value.message == replies.timelapse_just_posted(600)
        with pytest.raises(errors.NotAvailable) as big:  # too big: not counted as posted
            async with service.posting_timelapse(job.id, "webp", **where, limit=10):
                pass
        assert big.value.message.startswith("The timelapse is")
        clock.advance(600)
        async with service.posting_timelapse(job.id, "mp4", **where) as data:
            assert data == TIMELAPSE_MP4
