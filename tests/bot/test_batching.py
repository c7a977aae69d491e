"""The batching rule on its own: which waiting jobs share a pass, and the delays it keeps."""

from __future__ import annotations

from collections.abc import Hashable

from bot import batching
from bot.jobs import Job, JobState
from engine import schedule
from engine.protocol import PaintOptions


def job(job_id: str, user: str, key: str = "k1", work: int = 100, turn: int = 0) -> Job:
    return Job(
        id=job_id,
        platform="discord",
        chat_id="chat",
        user_id=user,
        user_name=user,
        options=PaintOptions(),
        state=JobState.QUEUED,
        created_at=0.0,
        photo_path="p",
        painting_path=key,  # the test's batch key rides here
        work=work,
        turn=turn,
    )


def key(j: Job) -> Hashable:
    return j.painting_path


def ids(passes: list[batching.Pass]) -> list[tuple[str, ...]]:
    return [tuple(j.id for j in group) for group in passes]


def test_with_one_job_per_pass_the_plan_is_the_fair_order_and_nobody_is_delayed() -> None:
    order = [job("a", "a"), job("b", "b", "k2"), job("c", "c")]
    batcher = batching.Batcher(key=key, factor=batching.default_factor)
    assert ids(batcher.plan(order, max_batch=1)) == [("a",), ("b",), ("c",)]
    batcher.charge(order, batcher.next_pass(order, max_batch=1))
    assert batcher.delays == {"b": 0.0, "c": 0.0}


def test_a_pass_is_the_next_job_and_the_jobs_that_can_share_it_in_fair_order() -> None:
    order = [
        job("a", "a"),
        job("b", "b"),
        job("c", "c", "k2"),  # skipped: a and b's work is ahead of it, and it had no delay
        job("d", "d"),
        job("e", "e"),
        job("f", "f"),  # the pass is full
    ]
    batcher = batching.Batcher(key=key, factor=batching.default_factor)
    assert ids(batcher.plan(order, max_batch=4)) == [("a", "b", "d", "e"), ("c",), ("f",)]
    batcher.charge(order, batcher.next_pass(order, max_batch=4))
    # The pass costs 2 jobs' time (4 jobs, a third more for each past the first): c waited for
    # a and b anyway, so it is not delayed; f saves the other two jobs' time.
    assert batcher.delays == {"c": 0.0, "f": -200.0}


def test_a_skipped_job_is_delayed_by_at_most_one_pass() -> None:
    order = [
        job("h1", "h1", "k1"),
        job("h2", "h2", "k3"),
        job("s", "s", "k2"),  # nothing can share its pass
        *(job(f"x{i}", f"x{i}", "k1") for i in range(3)),
        *(job(f"y{i}", f"y{i}", "k3") for i in range(3)),
        job("h3", "h3", "k4"),
    ]
    batcher = batching.Batcher(key=key, factor=batching.default_factor)
    passes = batcher.plan(order, max_batch=4)
    assert ids(passes) == [("h1", "x0", "x1", "x2"), ("h2", "y0", "y1", "y2"), ("s",), ("h3",)]
    # s waits for two passes of 2 jobs' time (400) instead of h1 and h2 one after another
    # (200): 200 later, one pass's duration, and no more.
    left = list(order)
    for group in passes[:2]:
        batcher.charge(left, group)
        left = [j for j in left if j not in group]
    assert batcher.delays["s"] == 200.0 == batching.cost([100] * 4, batching.default_factor)


def test_a_job_already_delayed_by_one_pass_is_not_skipped_again() -> None:
    order = [
        job("h1", "h1", "k1"),
        job("h2", "h2", "k3"),
        job("h3", "h3", "k4"),
        job("s", "s", "k2"),
        *(job(f"x{i}", f"x{i}", "k1") for i in range(3)),
        *(job(f"y{i}", f"y{i}", "k3") for i in range(3)),
        *(job(f"z{i}", f"z{i}", "k4") for i in range(3)),
    ]
    batcher = batching.Batcher(key=key, factor=batching.default_factor)
    passes = ids(batcher.plan(order, max_batch=4))
    # Two passes skip s (its delay reaches one pass's duration); the third head, h3, may not
    # take the z jobs past s: h3 goes alone, then s, then the z jobs together.
    assert passes[:5] == [
        ("h1", "x0", "x1", "x2"),
        ("h2", "y0", "y1", "y2"),
        ("h3",),
        ("s",),
        ("z0", "z1", "z2"),
    ]


def test_a_members_later_job_never_goes_ahead_of_their_earlier_one() -> None:
    order = [job("x", "x"), job("a1", "a", "k2"), job("a2", "a"), job("b", "b")]
    batcher = batching.Batcher(key=key, factor=batching.default_factor)
    assert ids(batcher.plan(order, max_batch=4)) == [("x", "b"), ("a1",), ("a2",)]


def test_nothing_is_batched_when_a_pass_takes_as_long_as_its_jobs_one_after_another() -> None:
    order = [job("a", "a"), job("b", "b"), job("c", "c")]
    batcher = batching.Batcher(key=key, factor=float)  # n jobs cost n times the largest
    assert ids(batcher.plan(order, max_batch=4)) == [("a",), ("b",), ("c",)]


def test_a_job_admitted_while_a_pass_paints_starts_with_that_pass_delay_to_it() -> None:
    batcher = batching.Batcher(key=key, factor=batching.default_factor)
    painting = [job("a", "a", turn=0), job("b", "b", turn=0), job("c", "c", turn=1)]
    # Turn 0: a and b would have been ahead of it anyway, c (turn 1) would not.
    newcomer = job("n", "n", turn=0)
    assert batcher.delay_on_arrival(newcomer, painting) == (
        batching.cost([100] * 3, batching.default_factor) - 200
    )
    assert batcher.delay_on_arrival(newcomer, [job("a", "a")]) == 0.0  # one job: none
    assert batcher.delay_on_arrival(newcomer, []) == 0.0


def test_batch_keys_follow_quality_size_bucket_and_past_crashes() -> None:
    def sized(
        job_id: str, width: int, height: int, quality: str = "draft", crashes: int = 0
    ) -> Job:
        base = job(job_id, job_id)
        return Job(
            **{
                **base.__dict__,
                "options": PaintOptions(quality=quality),
                "width": width,
                "height": height,
                "crashes": crashes,
            }
        )

    def key_of(j: Job) -> Hashable:
        return batching.batch_key(j, "gpu", schedule.DEFAULT_QUALITY)

    landscape = key_of(sized("a", 1024, 768))
    assert key_of(sized("b", 1024, 760)) == landscape  # about the same shape: same buckets
    assert key_of(sized("c", 768, 1024)) != landscape  # portrait
    assert key_of(sized("d", 1024, 768, "standard")) != landscape  # another quality
    assert key_of(sized("e", 1024, 768, crashes=1)) != landscape  # the engine died under it
    assert key_of(sized("f", 0, 0)) != key_of(sized("g", 0, 0))  # size unknown: alone
