"""What a member is told: the sentences, on plain text and on a platform's markup."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from bot import replies
from bot.errors import LimitReached
from bot.jobs import (
    Challenge,
    ChallengeState,
    Entry,
    Finished,
    Job,
    JobState,
    PositionChanged,
    Progress,
    QueueOverview,
    Standing,
    Started,
)
from bot.replies import PLAIN, Plain, StatusState
from engine.protocol import PaintOptions


@pytest.mark.parametrize(
    ("seconds", "elapsed", "estimate"),
    [
        (0, "0 s", "about 5 s"),
        (42.4, "42 s", "about 40 s"),
        (185, "3 min 05 s", "about 3 min"),
        (3900, "1 h 5 min", "about 1 h 5 min"),
    ],
)
def test_durations_measured_and_expected(seconds: float, elapsed: str, estimate: str) -> None:
    assert replies.elapsed(seconds) == elapsed
    assert replies.estimate(seconds) == estimate


def test_counts_and_spans() -> None:
    assert replies.count(1, "vote") == "1 vote"
    assert replies.count(2, "entry") == "2 entries"
    assert replies.count(0, "win") == "0 wins"
    assert replies.span(36 * 3600) == "1 day 12 hours"
    assert replies.span(30) == "less than a minute"


def test_image_refusals_name_the_file_and_what_is_accepted() -> None:
    accepted = "Send a PNG, JPEG, WebP, BMP, GIF or TIFF file."
    assert replies.not_an_image("photo", "notes.pdf", PLAIN) == (
        f"The photo (“notes.pdf”) isn't an image. {accepted}"
    )
    assert replies.unreadable_format("painting", "a.heic", "HEIC", PLAIN) == (
        f"The painting (“a.heic”) is in HEIC format, which I can't read. {accepted}"
    )
    assert replies.too_big("photo", "big.png", 3 * 2**20, 2**20, PLAIN, tip=replies.SMALLER) == (
        "The photo (“big.png”) is 3.0 MB; the most I accept is 1.0 MB. "
        "Try a smaller or more compressed version."
    )


def job(**changes: object) -> Job:
    from tests.bot.test_store import sample_job

    values: dict[str, object] = {"photo_name": "cat.png", **changes}
    return replace(sample_job("j1", user="u1"), **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Marked(Plain):
    """A markup that shows where each piece went, to tell sentences from markup."""

    def strong(self, text: str) -> str:
        return f"<b>{text}</b>"

    def member(self, user_id: str, name: str | None) -> str | None:
        return f"@{user_id}"

    def moment(self, seconds_from_now: float) -> str:
        return f"<in {seconds_from_now:.0f}s>"


@pytest.mark.parametrize(
    ("state", "headline", "lines"),
    [
        (
            StatusState(JobState.QUEUED, position=2, eta=90),
            "🎨 Waiting in the queue",
            ("@u1, your painting is <b>#2</b> in the queue.", "Expected to be ready <in 90s>."),
        ),
        (
            StatusState(JobState.RUNNING, percent=45, scale=1, scales=3, eta=60, note="low memory"),
            "🖌️ Painting… 45%",
            ("▰▰▰▰▰▱▱▱▱▱▱▱ <b>45%</b>", "Scale 2 of 3", "Ready <in 60s>", "low memory"),
        ),
        (
            StatusState(JobState.DONE, seconds=42),
            "✅ Done",
            ("Finished in 42 s. The painting is below, @u1.",),
        ),
        (StatusState(JobState.CANCELLED, by_user="u1"), "✖️ Cancelled", ("Cancelled by @u1.",)),
        (StatusState(JobState.CANCELLED, by_user="m9"), "✖️ Cancelled", ("Cancelled by @m9.",)),
        (
            StatusState(JobState.FAILED, message="The photo is broken."),
            "⚠️ This painting didn't work out",
            ("The photo is broken.", "", "Try again with /paint."),
        ),
    ],
)
def test_the_status_says_the_same_on_every_platform_bar_markup(
    state: StatusState, headline: str, lines: tuple[str, ...]
) -> None:
    text = replies.status(job(), state, Marked())
    assert text.headline == headline
    assert text.lines == lines
    assert text.headline.startswith(replies.STATUS_HEADLINES)


def test_a_moderators_cancel_is_named_where_the_platform_cannot_mention() -> None:
    text = replies.status(job(), StatusState(JobState.CANCELLED, by_user="m9"), PLAIN)
    assert text.lines == ("Cancelled by a moderator.",)


def test_the_status_follows_the_events_of_a_rerun() -> None:
    first = job(state=JobState.RUNNING)
    state = replies.status_after(StatusState(JobState.QUEUED), Started(job=first, rerun=True))
    assert state.note == replies.RERUN_NOTE
    progress = Progress(job=first, percent=10, scale=0, scales=2, eta=None, preview_jpeg=b"j")
    state = replies.status_after(state, progress)
    assert (state.note, state.preview, state.percent) == (replies.RERUN_NOTE, 1, 10)
    done = replies.status_after(state, Finished(job=first, result_png=b"", seconds=3))
    assert (done.state, done.seconds, done.preview) == (JobState.DONE, 3, 1)


def test_the_queue_names_only_members_of_the_same_chat() -> None:
    mine = job(user_id="u1", chat_id="c1")
    neighbour = replace(job(chat_id="c1"), id="j2", user_id="u2", user_name="Bea")
    stranger = replace(job(chat_id="c9"), id="j3", user_id="u3", user_name="Cy")
    overview = QueueOverview(
        running=stranger, running_percent=40.4, waiting=(neighbour, mine), etas={"j1": 120}
    )
    text = replies.queue(overview, platform="discord", user_id="u1", chat_id="c1", markup=PLAIN)
    assert text.joined() == "\n".join(
        (
            "🎨 The queue",
            "Painting now: a member elsewhere · 40%",
            "",
            "Waiting (2):",
            "1. Bea",
            "2. you · ready in about 2 min",
            "",
            "Your position: #2.",
        )
    )


def test_the_scaled_modes_restart_on_another_gpu_is_told_while_waiting_and_painting() -> None:
    again = replies.restarting_elsewhere(2)
    waiting = replies.status_after(
        StatusState(JobState.RUNNING, percent=60),
        PositionChanged(job=job(), position=1, eta=30, note=again),
    )
    assert replies.status(job(), waiting, PLAIN).lines == (
        "name-u1, your painting is #1 in the queue.",
        "Expected to be ready in about 30 s.",
        "Restarting on another GPU (attempt 2).",
    )
    running = replies.status_after(waiting, Started(job=job(), rerun=True, note=again))
    progress = Progress(job=job(), percent=5, scale=0, scales=1, eta=None)
    assert replies.status_after(running, progress).note == again  # kept while it paints
    noted = replace(progress, note="low memory: 512 px")
    assert replies.status_after(replies.status_after(running, noted), progress).note is None


def test_the_queue_shows_every_painting_of_this_bot_in_progress() -> None:
    first = replace(job(user_id="u2", user_name="Bea"), id="j1")
    mine = replace(job(user_id="u1"), id="j2")
    overview = QueueOverview(
        running=first,
        running_percent=80,
        waiting=(),
        etas={},
        also_running=(mine,),
        percents={"j1": 80, "j2": 10.4},
    )
    text = replies.queue(overview, platform="discord", user_id="u1", chat_id="c1", markup=PLAIN)
    assert text.lines[:2] == ("Painting now: Bea · 80%", "Also painting: you · 10%")
    assert "You have nothing in the queue. Start with /paint." not in text.lines


def test_an_unexpected_error_gets_a_reference_that_is_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert replies.error_reply(LimitReached("Wait for it."), where="test") == "Wait for it."
    assert caplog.records == []
    text = replies.error_reply(RuntimeError("boom"), where="test")
    reference = text.rsplit(" ", 1)[1].rstrip(".")
    assert text.startswith("Sorry, something went wrong on my side.")
    [record] = caplog.records
    assert reference in record.getMessage()
    assert record.exc_info is not None


@dataclass(frozen=True)
class AsShown(Plain):
    """Discord's markup as a member reads it: mentions as names, timestamps in words."""

    def quoted(self, text: str) -> str:
        return text

    def member(self, user_id: str, name: str | None) -> str | None:
        return f"@{name}" if name else None

    def moment(self, seconds_from_now: float) -> str:
        return {170: "in 3 minutes", 65: "in a minute"}[round(seconds_from_now)]


def test_the_readme_transcript_is_what_the_bot_says() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    transcript = readme.split("```", 2)[1]
    shown = [line.strip() for line in transcript.splitlines()]
    painting = job(
        id="k3X9qP2LmA",
        user_name="member",
        options=PaintOptions(strength=7, quality="standard"),
        photo_name="tubingen.jpg",
        painting_name="starry_night.jpg",
    )
    said = [
        replies.queued_here(replies.IN_THE_QUEUE, "https://discord.com/channels/…"),
        replies.ready(painting, AsShown()),
        replies.RESULT_TITLE,
        replies.inputs(painting, AsShown()),
        f"Settings: {replies.summary(painting.options)}",
    ]
    for state in (
        StatusState(JobState.QUEUED, position=2, eta=170),
        StatusState(JobState.RUNNING, percent=45, scale=1, scales=3, eta=65),
        StatusState(JobState.DONE, seconds=161),
    ):
        text = replies.status(painting, state, AsShown())
        said += [text.headline, *text.lines]
    for sentence in said:
        assert any(line.endswith(sentence) or sentence in line for line in shown), sentence


def test_a_text_too_long_for_one_message_is_cut_at_a_line_with_a_note() -> None:
    lines = [f"line {n}: " + "x" * 40 for n in range(100)]
    text = "\n".join(lines)
    fitted = replies.fit(text, 500)
    assert len(fitted) <= 500
    assert fitted.endswith("\n" + replies.CUT_SHORT)
    kept = fitted.splitlines()[:-1]
    assert kept == lines[: len(kept)]  # whole lines, in order
    assert replies.fit("short\ntext", 500) == "short\ntext"
    assert replies.fit("y" * 900, 500) == "y" * 499 + "…"


def test_standings_past_those_listed_say_how_many_more() -> None:
    challenge = Challenge(
        id=1,
        platform="telegram",
        community_id="g",
        chat_id="g",
        thread_id=None,
        title="Poppies",
        painting_path="p",
        painting_name="p.png",
        organiser_id="o",
        organiser_name="Olga",
        created_at=0.0,
        ends_at=100.0,
        state=ChallengeState.CLOSED,
    )
    ranked = [
        Standing(Entry(n, 1, f"job{n}", f"u{n}", f"Member {n}", 0.0, "e.png"), 30 - n, None)
        for n in range(1, 31)
    ]
    text = replies.standings(challenge, ranked, votes=True, markup=PLAIN)
    assert text.lines[-2].startswith("25. Member 25")
    assert text.lines[-1] == "… and 5 more entries."


def test_a_page_past_the_styles_is_answered_in_good_english() -> None:
    assert replies.no_more_styles(1) == "There is only 1 page of styles."
    assert replies.no_more_styles(3) == "There are only 3 pages of styles."
