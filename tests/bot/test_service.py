"""The paint service on the in-process fake engine and a real SQLite file."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from bot import errors
from bot.jobs import (
    Cancelled,
    Failed,
    Finished,
    Job,
    JobEvent,
    JobState,
    PaintRequest,
    PositionChanged,
    Progress,
    Queued,
    Started,
)
from bot.service import PaintService, next_turn, run_order
from bot.settings import Limits
from bot.store import Store
from engine.protocol import PaintOptions
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes, png_bytes


def request(user: str = "u1", chat: str = "c1", **options: object) -> PaintRequest:
    return PaintRequest(
        platform="discord",
        chat_id=chat,
        user_id=user,
        user_name=f"name-{user}",
        photo=png_bytes((64, 48)),
        painting=jpeg_bytes((50, 50)),
        options=PaintOptions(**options),  # type: ignore[arg-type]
    )


EventKind = type[JobEvent] | tuple[type[JobEvent], ...]


class Recorder:
    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: JobEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, job_id: str, kind: EventKind, within: float = 10.0) -> JobEvent:
        """The first event of this kind for this job, waiting until it comes."""
        async with asyncio.timeout(within):
            while not self.of(job_id, kind):
                self._changed.clear()
                await self._changed.wait()
        return self.of(job_id, kind)[0]

    def of(self, job_id: str, kind: EventKind = JobEvent) -> list[JobEvent]:
        return [e for e in self.events if e.job.id == job_id and isinstance(e, kind)]

    def last_position(self, job_id: str) -> int | None:
        positions = [
            e.position
            for e in self.events
            if e.job.id == job_id and isinstance(e, Queued | PositionChanged)
        ]
        return positions[-1] if positions else None


def make_service(
    store: Store,
    engine: FakeEngine,
    data_dir: Path,
    clock: FakeTime,
    limits: Limits | None = None,
) -> PaintService:
    return PaintService(
        store=store, engine=engine, limits=limits or Limits(), data_dir=data_dir, clock=clock
    )


async def settle(service: PaintService) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    await service.drained()


# -- fair order ------------------------------------------------------------------------------


def test_turns_make_the_order_round_robin_between_members() -> None:
    from tests.bot.test_store import sample_job

    queue: list[Job] = []
    for job_id, user in [
        ("a0", "a"),
        ("a1", "a"),
        ("a2", "a"),
        ("b0", "b"),
        ("b1", "b"),
        ("c0", "c"),
    ]:
        job = sample_job(job_id, user=user)
        queue.append(replace(job, turn=next_turn(queue, ("discord", user), current=0)))
    assert [j.id for j in run_order(queue)] == ["a0", "b0", "c0", "a1", "b1", "a2"]
    # A newcomer joins the turn being served, ahead of everyone's later jobs.
    late = replace(sample_job("d0", user="d"), turn=next_turn(queue, ("discord", "d"), current=1))
    assert [j.id for j in run_order([*queue[1:], late])] == ["b0", "c0", "a1", "b1", "d0", "a2"]


async def test_jobs_run_in_fair_order_and_positions_update(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock, Limits(per_member=3))
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        a1 = await service.submit(request("a"))
        first = await engine.wait_started(a1.id)
        a2 = await service.submit(request("a"))
        a3 = await service.submit(request("a"))
        b1 = await service.submit(request("b"))
        await settle(service)
        # b's first job goes ahead of a's second and third.
        assert [j.id for j in service.overview().waiting] == [b1.id, a2.id, a3.id]
        assert service.position(b1.id) == 1
        assert recorder.last_position(a2.id) == 2
        engine.finish(first)
        assert await engine.wait_started() == b1.id
        await settle(service)
        assert recorder.last_position(a2.id) == 1
        assert recorder.last_position(a3.id) == 2
        engine.finish(b1.id)
        assert await engine.wait_started() == a2.id
        engine.finish(a2.id)
        assert await engine.wait_started() == a3.id
        engine.finish(a3.id)
        await recorder.wait_for(a3.id, Finished)
    done = [e.job.id for e in recorder.events if isinstance(e, Finished)]
    assert done == [a1.id, b1.id, a2.id, a3.id]


async def test_events_of_a_job_from_queued_to_finished(service: PaintService) -> None:
    recorder = Recorder()
    service.add_listener(recorder)
    job = await service.submit(request())
    await recorder.wait_for(job.id, Finished)
    kinds = [type(e) for e in recorder.of(job.id)]
    assert kinds[0] is Queued
    assert Started in kinds
    assert kinds.count(Progress) == 3
    assert kinds[-1] is Finished
    finished = recorder.of(job.id, Finished)[0]
    assert isinstance(finished, Finished)
    assert finished.result_png.startswith(b"\x89PNG")
    progress = [e.percent for e in recorder.of(job.id, Progress) if isinstance(e, Progress)]
    assert progress == sorted(progress) and progress[-1] == 100
    assert all(isinstance(e, Progress) and e.preview_jpeg for e in recorder.of(job.id, Progress))
    stored = service.get(job.id)
    assert (
        stored.state is JobState.DONE and stored.result_path and Path(stored.result_path).is_file()
    )
    assert service.status().jobs_done == 1


# -- admission -------------------------------------------------------------------------------


async def test_second_job_of_a_member_is_refused_with_how_to_cancel(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(auto=False), data_dir, clock)
    async with service:
        await service.submit(request("a"))
        with pytest.raises(errors.LimitReached, match="/cancel"):
            await service.submit(request("a"))
        await service.submit(request("b"))  # another member is fine


async def test_queue_caps_refuse_with_a_wait_estimate(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock, Limits(queue=2, queue_per_chat=5))
    async with service:
        running = await service.submit(request("a"))
        await engine.wait_started(running.id)
        await service.submit(request("b"))
        await service.submit(request("c"))
        with pytest.raises(
            errors.QueueFull,
            match=r"queue is full \(2 paintings waiting\)\. Try again in about (a|\d+) minute",
        ):
            await service.submit(request("d"))


async def test_per_chat_cap(store: Store, data_dir: Path, clock: FakeTime) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock, Limits(queue=10, queue_per_chat=1))
    async with service:
        await engine.wait_started((await service.submit(request("a", chat="x"))).id)
        await service.submit(request("b", chat="x"))
        with pytest.raises(errors.QueueFull, match=r"This chat already has 1"):
            await service.submit(request("c", chat="x"))
        await service.submit(request("c", chat="y"))


async def test_bad_images_and_options_are_refused_before_queueing(service: PaintService) -> None:
    with pytest.raises(errors.InvalidImage, match=r"(?i)photo"):
        await service.submit(replace(request(), photo=b"not an image at all"))
    with pytest.raises(errors.InvalidImage, match=r"(?i)painting"):
        await service.submit(replace(request(), painting=png_bytes((10, 10))))
    with pytest.raises(errors.InvalidOptions, match="strength"):
        await service.submit(request(strength=11))
    assert service.overview().waiting == ()
    assert service.status().queue_length == 0


# -- ETA -------------------------------------------------------------------------------------


async def test_eta_counts_the_jobs_ahead_and_learns_engine_speed(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock)
    async with service:
        a = await service.submit(request("a"))
        await engine.wait_started(a.id)
        b = await service.submit(request("b"))
        c = await service.submit(request("c"))
        etas = service.overview().etas
        assert etas[a.id] < etas[b.id] < etas[c.id]
        per_work = service.seconds_per_work
        assert etas[c.id] - etas[b.id] == pytest.approx(c.work * per_work)
        # The running job reports its own ETA: the queue's ETAs follow it.
        await engine.progress(a.id, 50, eta=30.0)
        assert service.overview().etas[b.id] == pytest.approx(30.0 + b.work * per_work)
        engine.finish(a.id, seconds=10.0)
        await engine.wait_started(b.id)
        # One job measured: 64x48x100 work units took 10 s.
        assert service.seconds_per_work == pytest.approx(10.0 / (64 * 48 * 100))
    assert store.get_meta("seconds_per_work") is not None


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_queued_and_running(store: Store, data_dir: Path, clock: FakeTime) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock)
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        a = await service.submit(request("a"))
        await engine.wait_started(a.id)
        b = await service.submit(request("b"))
        c = await service.submit(request("c"))
        with pytest.raises(errors.NotAllowed):
            await service.cancel(b.id, user_id="c")
        await service.cancel(b.id, user_id="b")
        await settle(service)
        assert service.get(b.id).state is JobState.CANCELLED
        assert recorder.last_position(c.id) == 1
        await service.cancel(a.id, user_id="mod", moderator=True)
        assert a.id in engine.cancels
        await engine.wait_started(c.id)
        await settle(service)
        assert service.get(a.id).state is JobState.CANCELLED
        cancelled = recorder.of(a.id, Cancelled)
        assert cancelled and isinstance(cancelled[0], Cancelled) and cancelled[0].by_user == "mod"
        with pytest.raises(errors.JobNotFound, match="no painting in progress"):
            await service.cancel_mine("discord", "a")
        assert (await service.cancel_mine("discord", "c")).id == c.id


# -- restart, crashes and limits ------------------------------------------------------------


async def test_restart_recovers_queue_order_and_reruns_the_running_job(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock)
    await service.start()
    a = await service.submit(request("a"))
    await engine.wait_started(a.id)
    b = await service.submit(request("b"))
    c = await service.submit(request("c"))
    await service.close()  # the bot stops with a running and two queued jobs
    # A graceful stop puts the running job back in the queue, first in line.
    assert store.get_job(a.id).state is JobState.QUEUED  # type: ignore[union-attr]

    engine2 = FakeEngine(auto=False)
    service2 = make_service(store, engine2, data_dir, clock)
    recorder = Recorder()
    async with service2:
        service2.add_listener(recorder)  # an adapter that connects after start
        assert [j.id for j in service2.overview().waiting] == [a.id, b.id, c.id]
        assert await engine2.wait_started() == a.id
        await settle(service2)
        started = recorder.of(a.id, Started)
        assert started and isinstance(started[-1], Started) and started[-1].rerun
        engine2.finish(a.id)
        assert await engine2.wait_started() == b.id
        engine2.finish(b.id)
        assert await engine2.wait_started() == c.id


async def test_graceful_restarts_do_not_count_against_a_long_job(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    job_id = None
    for _ in range(3):  # three deploys while one long painting runs
        engine = FakeEngine(auto=False)
        async with make_service(store, engine, data_dir, clock) as service:
            if job_id is None:
                job_id = (await service.submit(request("a"))).id
            await engine.wait_started(job_id)
    engine = FakeEngine(auto=False)
    recorder = Recorder()
    async with make_service(store, engine, data_dir, clock) as service:
        service.add_listener(recorder)
        assert job_id is not None
        await engine.wait_started(job_id)
        engine.finish(job_id)
        await recorder.wait_for(job_id, Finished)
    assert recorder.of(job_id, Failed) == []


async def test_a_job_the_bot_was_killed_under_twice_fails(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    async with make_service(store, engine, data_dir, clock) as service:
        job = await service.submit(request("a"))
        await engine.wait_started(job.id)
    # The process was killed while painting: the row still says RUNNING.
    store.save_job(replace(store.get_job(job.id), state=JobState.RUNNING))  # type: ignore[type-var]
    engine = FakeEngine(auto=False)
    async with make_service(store, engine, data_dir, clock) as service:
        await engine.wait_started(job.id)  # once more
    store.save_job(replace(store.get_job(job.id), state=JobState.RUNNING))  # type: ignore[type-var]
    recorder = Recorder()
    service = make_service(store, FakeEngine(auto=False), data_dir, clock)
    service.add_listener(recorder)
    async with service:
        failed = await recorder.wait_for(job.id, Failed)
    assert isinstance(failed, Failed) and "interrupted twice" in failed.message
    assert store.get_job(job.id).state is JobState.FAILED  # type: ignore[union-attr]


async def test_engine_crash_retries_once_then_fails_the_poison_job(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock)
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        poison = await service.submit(request("a"))
        after = await service.submit(request("b"))
        await engine.wait_started(poison.id)
        engine.crash(poison.id)
        assert await engine.wait_started() == poison.id  # retried first, on a fresh engine
        assert engine.restarts == 1
        engine.crash(poison.id)
        assert await engine.wait_started() == after.id  # the queue goes on
        assert engine.restarts == 2
        await settle(service)
        failed = recorder.of(poison.id, Failed)
        assert failed and isinstance(failed[0], Failed) and failed[0].code == "engine_crashed"
        assert "twice" in failed[0].message
        assert service.get(poison.id).state is JobState.FAILED
        engine.finish(after.id)
        await settle(service)
        assert service.get(after.id).state is JobState.DONE


async def test_job_over_the_time_limit_is_stopped_and_failed(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock, Limits(job_timeout=0.05))
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        slow = await service.submit(request("a"))
        nxt = await service.submit(request("b"))
        await engine.wait_started(slow.id)
        assert await engine.wait_started() == nxt.id
        await settle(service)
        assert service.get(slow.id).state is JobState.FAILED
        assert service.get(slow.id).error_code == "timeout"
        assert slow.id in engine.cancels and engine.restarts == 1


async def test_engine_failure_is_passed_on_with_its_message(
    service: PaintService, fake_engine: FakeEngine
) -> None:
    fake_engine.auto = False
    recorder = Recorder()
    service.add_listener(recorder)
    job = await service.submit(request())
    await fake_engine.wait_started(job.id)
    fake_engine.fail(job.id, "out_of_memory", "Too big for the GPU even at 768 px.")
    await settle(service)
    failed = recorder.of(job.id, Failed)
    assert failed and isinstance(failed[0], Failed)
    assert failed[0].message == "Too big for the GPU even at 768 px."
    assert service.status().jobs_failed == 1


# -- rerolls and retention -------------------------------------------------------------------


async def test_reroll_uses_stored_inputs_with_changed_options(
    service: PaintService, fake_engine: FakeEngine
) -> None:
    recorder = Recorder()
    service.add_listener(recorder)
    job = await service.submit(request(strength=5))
    await recorder.wait_for(job.id, Finished)
    stronger = await service.reroll(job.id, user_id="u1", user_name="x", change="stronger")
    assert stronger.options.strength == 7 and stronger.parent_id == job.id
    assert stronger.photo_path == job.photo_path
    await recorder.wait_for(stronger.id, Finished)
    colours = await service.reroll(stronger.id, user_id="u1", user_name="x", change="keep_colors")
    assert colours.options.keep_colors is True and colours.options.strength == 7


async def test_expired_files_are_deleted_and_rerolls_explain(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(), data_dir, clock, Limits(retention_hours=1))
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        job = await service.submit(request())
        await recorder.wait_for(job.id, Finished)
        done = service.get(job.id)
        assert done.result_path and Path(done.result_path).is_file()
        assert await service.purge_expired() == 0
        clock.advance(2 * 3600)
        assert await service.purge_expired() == 1
        assert not Path(done.result_path).exists()
        assert not Path(done.photo_path).exists()
        with pytest.raises(errors.NotAvailable, match="retention"):
            await service.reroll(job.id, user_id="u1", user_name="x", change="softer")


async def test_a_failing_listener_does_not_stop_the_queue(service: PaintService) -> None:
    async def broken(event: JobEvent) -> None:
        raise RuntimeError("adapter bug")

    recorder = Recorder()
    service.add_listener(broken)
    service.add_listener(recorder)
    job = await service.submit(request())
    finished = await recorder.wait_for(job.id, Finished)
    assert isinstance(finished, Finished)


async def test_unset_quality_takes_the_hosts_default(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = PaintService(
        store=store,
        engine=engine,
        limits=Limits(),
        data_dir=data_dir,
        clock=clock,
        default_quality="draft",
    )
    async with service:
        unset = await service.submit(request("a", quality=""))
        chosen = await service.submit(request("b", quality="high"))
        assert unset.options.quality == "draft"
        assert chosen.options.quality == "high"
        assert unset.work < chosen.work
        await engine.wait_started(unset.id)
        assert engine.seen[0].options.quality == "draft"


async def test_the_same_painting_submitted_at_once_is_stored_once(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    limits = Limits(queue=100, queue_per_chat=100)
    service = make_service(store, FakeEngine(auto=False), data_dir, clock, limits)
    async with service:
        jobs = await asyncio.gather(*(service.submit(request(f"m{i}")) for i in range(20)))
    assert len({job.painting_path for job in jobs}) == 1
    assert sorted(p.suffix for p in (data_dir / "inputs").iterdir()) == [".img", ".img"]


async def test_a_reroll_of_a_challenge_entry_is_not_an_entry(service: PaintService) -> None:
    recorder = Recorder()
    service.add_listener(recorder)
    entry = await service.submit(replace(request(), challenge_id=4))
    await recorder.wait_for(entry.id, Finished)
    again = await service.reroll(entry.id, user_id="u1", user_name="x", change="softer")
    assert entry.challenge_id == 4
    assert again.challenge_id is None


async def test_a_refused_request_leaves_no_files(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(auto=False), data_dir, clock)
    first = request("a")
    second = replace(request("a"), photo=png_bytes((70, 50)), painting=png_bytes((90, 80)))
    async with service:
        # Both pass the first limit check; one is refused when checked again after validation.
        results = await asyncio.gather(
            service.submit(first), service.submit(second), return_exceptions=True
        )
    refused = [r for r in results if isinstance(r, errors.LimitReached)]
    admitted = [r for r in results if isinstance(r, Job)]
    assert len(refused) == 1 and len(admitted) == 1
    kept = {admitted[0].photo_path, admitted[0].painting_path}
    assert {str(p) for p in (data_dir / "inputs").iterdir()} == kept


# -- delivery --------------------------------------------------------------------------------


class Deliverer:
    """An adapter's listener as adapters work: each result is posted by a task of its own,
    marked delivered once posted; closing cancels the posts in flight."""

    def __init__(self, service: PaintService, *, platform: str = "discord") -> None:
        self.service = service
        self.posted: list[str] = []
        self.hold: asyncio.Event | None = None  # set: posting waits for it
        self.posting: set[asyncio.Task[None]] = set()
        service.add_listener(self, delivers=platform)

    async def __call__(self, event: JobEvent) -> None:
        if isinstance(event, Finished):
            task = asyncio.create_task(self._post(event))
            self.posting.add(task)
            task.add_done_callback(self.posting.discard)

    async def _post(self, event: Finished) -> None:
        if self.hold is not None:
            await self.hold.wait()
        assert event.result_png.startswith(b"\x89PNG")
        self.posted.append(event.job.id)
        await self.service.mark_delivered(event.job.id)

    async def close(self) -> None:
        for task in list(self.posting):
            task.cancel()
        await asyncio.gather(*self.posting, return_exceptions=True)


async def test_a_result_never_marked_delivered_is_announced_again_once(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(), data_dir, clock)
    recorder = Recorder()
    service.add_listener(recorder, delivers="discord")  # it never marks: the bot stops first
    async with service:
        job = await service.submit(request())
        await recorder.wait_for(job.id, Finished)
    assert [j.id for j in store.undelivered()] == [job.id]

    again = make_service(store, FakeEngine(), data_dir, clock)
    async with again:
        deliverer = Deliverer(again)  # an adapter that connects after the start gets it too
        await again.drained()
        while deliverer.posting:
            await asyncio.gather(*deliverer.posting)
    assert deliverer.posted == [job.id]
    assert store.undelivered() == []

    third = make_service(store, FakeEngine(), data_dir, clock)
    deliverer = Deliverer(third)
    async with third:
        await third.drained()
    assert deliverer.posted == []


async def test_shutdown_gives_deliveries_in_flight_their_grace(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(), data_dir, clock)
    deliverer = Deliverer(service)
    deliverer.hold = asyncio.Event()
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        job = await service.submit(request())
        await recorder.wait_for(job.id, Finished)
        await service.drained()
        assert deliverer.posting  # the upload is in flight
        settling = asyncio.create_task(service.deliveries_settled(60))
        await asyncio.sleep(0)
        assert not settling.done()
        deliverer.hold.set()  # the upload finishes during the grace
        assert await settling
        await deliverer.close()
    assert deliverer.posted == [job.id]
    assert store.undelivered() == []


async def test_a_grace_that_runs_out_leaves_the_result_for_the_next_start(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(), data_dir, clock)
    stuck = Deliverer(service)
    stuck.hold = asyncio.Event()  # never set: the platform does not answer
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        job = await service.submit(request())
        await recorder.wait_for(job.id, Finished)
        await service.drained()
        assert not await service.deliveries_settled(0)
        await stuck.close()  # the adapter gives up its uploads at shutdown
    assert stuck.posted == []
    again = make_service(store, FakeEngine(), data_dir, clock)
    deliverer = Deliverer(again)
    async with again:
        await again.drained()
        await asyncio.gather(*deliverer.posting)
    assert deliverer.posted == [job.id]


async def test_a_platform_without_a_delivering_listener_counts_as_delivered_when_handled(
    service: PaintService,
) -> None:
    recorder = Recorder()
    service.add_listener(recorder)  # an adapter that does not mark deliveries (yet)
    job = await service.submit(request())
    await recorder.wait_for(job.id, Finished)
    await service.drained()
    assert await service.deliveries_settled(0)
    assert service.get(job.id).delivered_at is not None


# -- who may paint again or delete -----------------------------------------------------------


async def test_only_the_owner_or_a_moderator_paints_a_finished_painting_again(
    service: PaintService,
) -> None:
    recorder = Recorder()
    service.add_listener(recorder)
    job = await service.submit(request("u1"))
    await recorder.wait_for(job.id, Finished)
    with pytest.raises(errors.NotAllowed, match=r"^Only name-u1 can paint this again\.$"):
        await service.reroll(job.id, user_id="u2", user_name="x", change="softer")
    with pytest.raises(errors.NotAllowed, match="another chat platform"):
        await service.reroll(
            job.id, user_id="u1", user_name="x", change="softer", platform="telegram"
        )
    again = await service.reroll(
        job.id, user_id="mod", user_name="Mod", change="softer", moderator=True
    )
    assert again.parent_id == job.id and again.user_id == "mod"


async def test_only_a_finished_painting_is_painted_again(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock)
    async with service:
        running = await service.submit(request("a"))
        await engine.wait_started(running.id)
        with pytest.raises(errors.NotAvailable, match="isn't finished yet"):
            await service.reroll(running.id, user_id="a", user_name="a", change="softer")
        engine.fail(running.id)
        await settle(service)
        with pytest.raises(errors.NotAvailable, match="Only a finished painting"):
            await service.reroll(running.id, user_id="a", user_name="a", change="softer")


async def test_deleting_a_result_takes_inputs_no_kept_painting_uses(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(), data_dir, clock, Limits(per_member=2))
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        first = await service.submit(request("a"))
        shared = replace(request("b"), photo=png_bytes((70, 50)))  # same painting, own photo
        second = await service.submit(shared)
        await recorder.wait_for(second.id, Finished)
        first, second = service.get(first.id), service.get(second.id)
        with pytest.raises(errors.NotAllowed):
            await service.delete_result(first.id, user_id="b")
        await service.delete_result(first.id, user_id="a")
        assert first.result_path and not Path(first.result_path).exists()
        assert not Path(first.photo_path).exists()  # only this painting used it
        assert Path(first.painting_path).exists()  # the other one still does
        with pytest.raises(errors.NotAvailable, match="was deleted"):
            await service.reroll(first.id, user_id="a", user_name="a", change="softer")
        await service.delete_result(second.id, user_id="mod", moderator=True)
        assert not Path(second.painting_path).exists()
        assert list((data_dir / "inputs").iterdir()) == []


async def test_cancel_mine_cancels_only_in_the_chat_where_it_is_asked(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock, Limits(per_member=3))
    async with service:
        # Telegram's anonymous admins share one user id across groups.
        here = await service.submit(request("anon", chat="group-1"))
        await engine.wait_started(here.id)
        there = await service.submit(request("anon", chat="group-2"))
        with pytest.raises(errors.JobNotFound, match="no painting in progress"):
            await service.cancel_mine("discord", "anon", chat_id="group-3")
        cancelled = await service.cancel_mine("discord", "anon", chat_id="group-1")
        assert cancelled.id == here.id
        assert service.get(there.id).state is JobState.QUEUED


async def test_members_pictures_are_readable_by_the_owner_only(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        service = make_service(store, FakeEngine(), data_dir, clock)
        recorder = Recorder()
        service.add_listener(recorder)
        async with service:
            job = await service.submit(request())
            await recorder.wait_for(job.id, Finished)
    finally:
        os.umask(old)
    for folder in (data_dir, data_dir / "inputs", data_dir / "results"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in (data_dir / "inputs").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
