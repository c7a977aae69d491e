"""What a member is told: pure functions from the core's data to sentences.

Both platforms say the same sentences; each adds only its markup through a :class:`Markup`
(Discord: markdown, mentions, and timestamps every member sees in their own time zone;
Telegram: plain text, :class:`Plain`). The one thing here that is not pure is
:func:`error_reply`, which logs an unexpected error under the reference it gives the member.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from bot.errors import UserFacingError
from bot.jobs import (
    Cancelled,
    Challenge,
    ChallengeState,
    Entry,
    Failed,
    Finished,
    Job,
    JobEvent,
    JobState,
    LeaderboardRow,
    Outcome,
    PositionChanged,
    Progress,
    Queued,
    QueueOverview,
    Standing,
    Started,
    VoteResult,
)
from bot.options import DEFAULTS, IMAGE_FORMATS, REROLLS, Reroll, rerolls_for
from engine.protocol import PaintOptions

log = logging.getLogger(__name__)

ACCEPTED: Final = (
    f"Send a {', '.join(f.name for f in IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1].name} file."
)
SMALLER: Final = "Try a smaller or more compressed version."
SMALLER_OR_PHOTO: Final = (
    "Try a smaller or more compressed version, or send it as a photo (Telegram shrinks photos)."
)
RERUN_NOTE: Final = "Painting again: the bot restarted while this was being painted."
MEDALS: Final = ("🥇", "🥈", "🥉")
PLACES: Final = ("1st", "2nd", "3rd")


class Markup(Protocol):
    """How a platform marks up the pieces of a sentence."""

    def strong(self, text: str) -> str:
        """Text that should stand out (a position, a label)."""
        ...

    def quoted(self, text: str) -> str:
        """Something a member wrote or named (a title, a file name), inside a sentence."""
        ...

    def name(self, text: str, limit: int = 60) -> str:
        """A member's or a file's name, as it stands alone (escaped, clipped)."""
        ...

    def emphasis(self, text: str) -> str: ...

    def member(self, user_id: str, name: str | None) -> str | None:
        """A member, so that they are notified where the platform can; None: not nameable."""
        ...

    def moment(self, seconds_from_now: float) -> str:
        """When something expected happens: ``in about 3 min``."""
        ...

    def date(self, moment: float) -> str:
        """A date and time (unix seconds), with how far off it is."""
        ...

    def link(self, text: str, url: str | None) -> str: ...


@dataclass(frozen=True)
class Plain:
    """Plain text (Telegram): quotes instead of bold, times in words."""

    now: float = 0.0  # unix seconds, for "in 3 days"

    def strong(self, text: str) -> str:
        return text

    def quoted(self, text: str) -> str:
        return f"“{text}”"

    def name(self, text: str, limit: int = 60) -> str:
        return clip(text, limit)

    def emphasis(self, text: str) -> str:
        return text

    def member(self, user_id: str, name: str | None) -> str | None:
        return name

    def moment(self, seconds_from_now: float) -> str:
        return f"in {estimate(seconds_from_now)}"

    def date(self, moment: float) -> str:
        if moment <= self.now:
            return utc_time(moment)
        return f"{utc_time(moment)} (in {span(moment - self.now)})"

    def link(self, text: str, url: str | None) -> str:
        return text


PLAIN: Final = Plain()


# ----------------------------------------------------------------------------------------------
# Sizes and durations


def megabytes(size: float) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def elapsed(seconds: float) -> str:
    """A measured time: ``42 s``, ``3 min 05 s``, ``1 h 5 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60} min"


def estimate(seconds: float) -> str:
    """An expected time: ``about 40 s``, ``about 3 min``, ``about 1 h 5 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min"


def span(seconds: float) -> str:
    """A length of time in words: ``1 day 12 hours``."""
    seconds = round(seconds)
    days, rest = divmod(seconds, 24 * 3600)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        f"{value} {unit}{'s' if value != 1 else ''}"
        for value, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
        if value
    ]
    return " ".join(parts) or "less than a minute"


def utc_time(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment))


def count(number: int, noun: str) -> str:
    """``1 vote``, ``2 votes``, ``3 entries``."""
    consonant_y = noun.endswith("y") and noun[-2:-1] not in ("a", "e", "o", "u")
    plural = f"{noun[:-1]}ies" if consonant_y else f"{noun}s"
    return f"{number} {noun if number == 1 else plural}"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


CUT_SHORT: Final = "… (the rest does not fit in one message)"


def fit(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters (a platform's message limit): whole lines
    while they fit, then :data:`CUT_SHORT`; the first line clipped if even it is too long."""
    if len(text) <= limit:
        return text
    kept: list[str] = []
    room = limit - len(CUT_SHORT) - 1
    for line in text.split("\n"):
        if len(line) + 1 > room:
            break
        kept.append(line)
        room -= len(line) + 1
    if not kept:
        return clip(text.split("\n", 1)[0], limit)
    return "\n".join((*kept, CUT_SHORT))


def rounded_moment(seconds_from_now: float, now: float, granularity: int = 10) -> int:
    """Unix seconds, rounded up so that small changes of an estimate change nothing shown."""
    return math.ceil((now + max(0.0, seconds_from_now)) / granularity) * granularity


# ----------------------------------------------------------------------------------------------
# Refusals of an image before it is downloaded


def not_an_image(role: str, name: str, markup: Markup) -> str:
    return f"The {role} ({markup.quoted(name)}) isn't an image. {ACCEPTED}"


def unreadable_format(role: str, name: str, kind: str, markup: Markup) -> str:
    # No article: "a SVG+XML", "a AVIF" read wrong, and a rule for spoken letters is guesswork.
    return f"The {role} ({markup.quoted(name)}) is in {kind} format, which I can't read. {ACCEPTED}"


def too_big(role: str, name: str, size: int, limit: int, markup: Markup, *, tip: str) -> str:
    return (
        f"The {role} ({markup.quoted(name)}) is {megabytes(size)}; the most I accept is "
        f"{megabytes(limit)}. {tip}"
    )


def too_big_to_fetch(role: str, name: str, limit: int, markup: Markup) -> str:
    return (
        f"The {role} ({markup.quoted(name)}) is too large for bots to fetch from Telegram "
        f"(over {megabytes(limit)}). {SMALLER}"
    )


def not_downloaded(role: str, name: str, platform: str, markup: Markup) -> str:
    return (
        f"I couldn't download the {role} ({markup.quoted(name)}) from {platform}. "
        "Please send it again."
    )


# ----------------------------------------------------------------------------------------------
# Errors


def error_reply(error: BaseException, *, where: str) -> str:
    """What to tell a member about ``error``: their mistake's own message, or, for anything
    else, an apology with a reference id under which the error is logged."""
    if isinstance(error, UserFacingError):
        return error.message
    reference = secrets.token_hex(4)
    log.error("%s failed (reference %s)", where, reference, exc_info=error)
    return unexpected(reference)


def unexpected(reference: str) -> str:
    return (
        "Sorry, something went wrong on my side. Please try again; if it keeps happening, "
        f"tell the admins reference {reference}."
    )


# ----------------------------------------------------------------------------------------------
# Refusals of the service


def option_refused(problem: object) -> str:
    return f"That option doesn't work: {problem}."


def in_progress(mine: int, allowed: int) -> str:
    if allowed == 1:
        return (
            "You already have a painting in progress. Wait for it to finish, "
            "or cancel it with /cancel."
        )
    return (
        f"You already have {mine} paintings in progress, the most allowed. "
        "Wait for one to finish, or cancel one with /cancel."
    )


def queue_full(waiting: int, wait: float) -> str:
    return f"The queue is full ({waiting} paintings waiting). Try again in {slot_wait(wait)}."


def chat_queue_full(waiting: int, wait: float) -> str:
    return (
        f"This chat already has {waiting} paintings waiting, the most allowed. "
        f"Try again in {slot_wait(wait)}."
    )


PAUSED: Final = "Painting is paused, try again shortly."  # the job queue cannot be reached


def slot_wait(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return "about a minute" if minutes == 1 else f"about {minutes} minutes"


def owner_only(job: Job, action: str) -> str:
    return f"Only {job.user_name} or a moderator can {action} this painting."


def already(state: JobState) -> str:
    return f"That painting is already {state.value}."


def only_owner_repaints(job: Job) -> str:
    return f"Only {job.user_name} can paint this again."


NOT_FINISHED_YET: Final = "That painting isn't finished yet; once it is, you can paint it again."
NOT_A_FINISHED_PAINTING: Final = (
    "Only a finished painting can be painted again. Send it again with /paint."
)
OTHER_PLATFORM: Final = (
    "That painting was made on another chat platform; it can only be painted again there."
)
DELETED_WITH_INPUTS: Final = (
    "That painting was deleted, with its photo and painting. Send them again with /paint."
)
CANCEL_INSTEAD: Final = "That painting isn't finished yet; cancel it instead."


NOTHING_TO_CANCEL: Final = "You have no painting in progress. Start one with /paint."
NOT_FOUND: Final = "I can't find that painting; it may have expired."
INPUTS_DELETED: Final = (
    "The photo and painting of that result have been deleted after the retention period. "
    "Please send them again with /paint."
)
RESULT_DELETED: Final = "That painting has been deleted."
INTERRUPTED_TWICE: Final = (
    "This painting was interrupted twice by restarts, so I stopped trying. Please send it again."
)
CRASHED_TWICE: Final = (
    "This painting stopped the engine twice, so I gave up on it. "
    "Try a smaller photo or another painting."
)
OUR_FAULT: Final = "Something went wrong on my side. Please try again."
RESULT_LOST: Final = (
    "The painting was finished but its result was lost on the way. Please send it again."
)


def restarting_elsewhere(attempt: int) -> str:
    """Scaled mode: the GPU painting it went away (or stopped); another one takes it."""
    return f"Restarting on another GPU (attempt {attempt})."


def input_deleted(which: str) -> str:
    return f"The {which} of that painting has been deleted."


def too_slow(limit_seconds: float) -> str:
    return (
        f"This painting took longer than the {limit_seconds / 60:.0f}-minute limit and was "
        "stopped. Try quality=draft or a smaller photo."
    )


# ----------------------------------------------------------------------------------------------
# Options and results


def summary(options: PaintOptions, blended_with: str | None = None) -> str:
    """``strength 7 · draft quality · medium brush · the painting's colours``, and for a blend
    (``blended_with``: the second painting's name) ``· blend 30% with waves.jpg``."""
    colours = "your photo's colours" if options.keep_colors else "the painting's colours"
    quality = options.quality or DEFAULTS.quality
    text = f"strength {options.strength} · {quality} quality · {options.brush} brush · {colours}"
    if blended_with is not None:
        text += f" · blend {options.blend}% with {clip(blended_with, 40)}"
    return text


def inputs(job: Job, markup: Markup) -> str:
    text = f"📷 {markup.name(job.photo_name)}  ×  🖼️ {markup.name(job.painting_name)}"
    if job.blended_with is not None:
        text += f" + 🖼️ {markup.name(job.blended_with)}"
    return text


def owner(job: Job, markup: Markup) -> str:
    return markup.member(job.user_id, job.user_name) or job.user_name


def both(items: Iterable[str]) -> str:
    """``a, b and c``."""
    *rest, last = items
    return f"{', '.join(rest)} and {last}" if rest else last


RESULT_TITLE: Final = "🖼️ Your painting is ready"
SENT_AS_JPEG: Final = "Sent as a JPEG to fit Discord's upload limit."
FULL_QUALITY: Final = "Full quality, as a file."


def ready(job: Job, markup: Markup) -> str:
    return f"{owner(job, markup)}, your painting is ready!"


def painted_in(seconds: float) -> str:
    return f"Painted in {elapsed(seconds)}"


def rerolls_hint(options: PaintOptions) -> str:
    """Under a result: ``Stronger/Softer/Keep colours paint it again``."""
    return f"{'/'.join(way.label(options) for way in rerolls_for(options))} paint it again"


def rerolls_help(markup: Markup) -> str:
    labels = both(markup.strong(way.label(DEFAULTS)) for way in REROLLS)
    return f"Under a result, {labels} paint it again."


def rerolling(way: Reroll, options: PaintOptions) -> str:
    """The answer to a re-roll button under a painting made with ``options``."""
    return f"Painting it again, {way.change(options)}."


def cancelling(job: Job, by_user: str) -> str:
    whose = "your" if by_user == job.user_id else f"{job.user_name}'s"
    if job.state is JobState.RUNNING:
        return f"Stopping {whose} painting; it will be cancelled in a moment."
    return f"Cancelled {whose} painting."


DELETED: Final = "Deleted the painting."
NOT_THIS_MESSAGE: Final = "That button is not one of this message's, so it does nothing."


# ----------------------------------------------------------------------------------------------
# Timelapses: the button under a result, and what pressing it gives


TIMELAPSE_LABEL: Final = "Timelapse"  # the button, on both platforms
TIMELAPSE_EMOJI: Final = "🎞️"
NO_TIMELAPSE_YET: Final = "That painting isn't finished yet; its timelapse comes with it."
NO_TIMELAPSE: Final = "There is no timelapse of that painting: it could not be made."
TIMELAPSE_DELETED: Final = "That painting was deleted, and its timelapse with it."
NO_TIMELAPSE_HERE: Final = (
    "There is no timelapse of that painting here: press Timelapse under the painting, in the "
    "chat where it was posted."
)


def timelapse_expired(retention_hours: float) -> str:
    return (
        f"Timelapses are kept for {span(retention_hours * 3600)} after a painting is finished, "
        "and this one's time is up."
    )


def timelapse_just_posted(seconds: float) -> str:
    return (
        f"This painting's timelapse was posted here less than {span(seconds)} ago: it is just "
        "above."
    )


def timelapse_too_big(size: int, limit: int) -> str:
    return (
        f"The timelapse is {megabytes(size)}, more than the {megabytes(limit)} I may upload "
        "here, so I can't post it in this channel."
    )


def timelapse_caption(job: Job, markup: Markup) -> str:
    return f"{TIMELAPSE_EMOJI} {markup.name(job.user_name, 40)}'s painting emerging from the photo."


def queued_here(what: str, url: str) -> str:
    return f"{what} Follow it here: {url}"


def queued_elsewhere(what: str) -> str:
    return f"{what} I couldn't post its progress here, but I'll post the result when it's ready."


IN_THE_QUEUE: Final = "Your painting is in the queue."


# ----------------------------------------------------------------------------------------------
# The status message of a painting


@dataclass(frozen=True)
class StatusState:
    """What the status message of one job should say; comparing two tells whether to edit."""

    state: JobState
    position: int | None = None
    eta: float | None = None  # seconds until done when the state was recorded
    percent: float = 0.0
    scale: int = 0
    scales: int = 0
    note: str | None = None
    preview: int = 0  # how many previews were received so far (0 = none)
    message: str | None = None  # failure message
    by_user: str | None = None  # who cancelled
    seconds: float | None = None  # painting time when done
    rerun: bool = False  # ``note`` says that it paints again (kept until the engine's note)


def status_after(status: StatusState, event: JobEvent) -> StatusState:
    """The status after ``event`` (an unknown event leaves it as it is)."""
    if isinstance(event, Queued):
        return StatusState(JobState.QUEUED, position=event.position, eta=event.eta)
    if isinstance(event, PositionChanged):
        note = event.note
        return StatusState(JobState.QUEUED, position=event.position, eta=event.eta, note=note)
    if isinstance(event, Started):
        note = (event.note or RERUN_NOTE) if event.rerun else None
        return StatusState(JobState.RUNNING, preview=status.preview, note=note, rerun=event.rerun)
    if isinstance(event, Progress):
        # A rerun's note stays until the engine has a note of its own.
        rerun = status.rerun and not event.note
        return StatusState(
            JobState.RUNNING,
            percent=event.percent,
            scale=event.scale,
            scales=event.scales,
            eta=event.eta,
            note=event.note or (status.note if rerun else None),
            preview=status.preview + 1 if event.preview_jpeg else status.preview,
            rerun=rerun,
        )
    if isinstance(event, Finished):
        return StatusState(JobState.DONE, seconds=event.seconds, preview=status.preview)
    if isinstance(event, Failed):
        return StatusState(JobState.FAILED, message=event.message, preview=status.preview)
    if isinstance(event, Cancelled):
        return StatusState(JobState.CANCELLED, by_user=event.by_user, preview=status.preview)
    return status


@dataclass(frozen=True)
class Text:
    """A headline and its lines (a Discord embed's title and description, a Telegram caption)."""

    headline: str
    lines: tuple[str, ...] = ()

    def joined(self) -> str:
        return "\n".join((self.headline, *self.lines))


STATUS_HEADLINES: Final = ("🎨", "🖌️", "✅", "✖️", "⚠️")  # how each status headline starts


def status(job: Job, state: StatusState, markup: Markup) -> Text:
    """The status message of ``job`` in ``state``."""
    who = owner(job, markup)
    if state.state is JobState.QUEUED:
        place = markup.strong(f"#{state.position or '?'}")
        lines = [f"{who}, your painting is {place} in the queue."]
        if state.eta is not None:
            lines.append(f"Expected to be ready {markup.moment(state.eta)}.")
        if state.note:
            lines.append(markup.emphasis(state.note))
        return Text("🎨 Waiting in the queue", tuple(lines))
    if state.state is JobState.RUNNING:
        percent = round(state.percent)
        lines = [f"{progress_bar(state.percent)} {markup.strong(f'{percent}%')}"]
        if state.scales > 1:
            lines.append(f"Scale {state.scale + 1} of {state.scales}")
        if state.eta is not None:
            lines.append(f"Ready {markup.moment(state.eta)}")
        if state.note:
            lines.append(markup.emphasis(state.note))
        return Text(f"🖌️ Painting… {percent}%", tuple(lines))
    if state.state is JobState.DONE:
        took = f" in {elapsed(state.seconds)}" if state.seconds is not None else ""
        return Text("✅ Done", (f"Finished{took}. The painting is below, {who}.",))
    if state.state is JobState.CANCELLED:
        by = state.by_user
        canceller = who
        if by and by != job.user_id:
            canceller = markup.member(by, None) or "a moderator"
        return Text("✖️ Cancelled", (f"Cancelled by {canceller}.",))
    message = state.message or OUR_FAULT
    return Text("⚠️ This painting didn't work out", (message, "", "Try again with /paint."))


def failed_without_status(job: Job, message: str, markup: Markup) -> str:
    """A failure told in a message of its own (the status message is gone)."""
    return f"{owner(job, markup)}, your painting didn't work out: {message}"


def progress_bar(percent: float, width: int = 12) -> str:
    filled = max(0, min(width, round(width * percent / 100)))
    return "▰" * filled + "▱" * (width - filled)


# ----------------------------------------------------------------------------------------------
# The queue


def queue(
    overview: QueueOverview, *, platform: str, user_id: str, chat_id: str, markup: Markup
) -> Text:
    """The queue as one member sees it: names only of members in the same chat."""

    def mine(job: Job) -> bool:
        return job.platform == platform and job.user_id == user_id

    def who(job: Job) -> str:
        if mine(job):
            return "you"
        if job.platform == platform and job.chat_id == chat_id:
            return markup.name(job.user_name, 40)
        return "a member elsewhere"

    lines: list[str] = []
    running = overview.running
    if running is not None:
        percent = round(overview.running_percent or 0)
        lines.append(f"{markup.strong('Painting now:')} {who(running)} · {percent}%")
        for job in overview.also_running:
            percent = round(overview.percents.get(job.id, 0.0))
            lines.append(f"{markup.strong('Also painting:')} {who(job)} · {percent}%")
    else:
        lines.append(f"{markup.strong('Painting now:')} nothing; the easel is free.")
    if overview.waiting:
        lines.append("")
        lines.append(markup.strong(f"Waiting ({len(overview.waiting)}):"))
        for position, job in enumerate(overview.waiting[:10], start=1):
            eta = overview.etas.get(job.id)
            when = f" · ready {markup.moment(eta)}" if eta is not None else ""
            lines.append(f"{position}. {who(job)}{when}")
        if len(overview.waiting) > 10:
            lines.append(f"…and {len(overview.waiting) - 10} more")
    else:
        lines.append("Nobody is waiting.")
    positions = [i for i, job in enumerate(overview.waiting, start=1) if mine(job)]
    if positions:
        lines.append("")
        lines.append(f"Your position: {markup.strong(f'#{positions[0]}')}.")
    elif not any(mine(job) for job in (*([running] if running else []), *overview.also_running)):
        lines.append("")
        lines.append("You have nothing in the queue. Start with /paint.")
    return Text("🎨 The queue", tuple(lines))


# ----------------------------------------------------------------------------------------------
# Asking on Telegram: the guided /paint


ASK_PHOTO: Final = (
    "Send me the photo to paint, as a photo or as a file (reply to this message in a group). "
    "/cancel stops."
)
ASK_PAINTING: Final = "Now send the painting whose style I should use, as a photo or as a file."
FLOW_STOPPED: Final = "Stopped. Send /paint whenever you want to try again."


POST_AS_YOURSELF: Final = (
    "I can't tell who you are when you post as a channel or as an anonymous admin, so I can't "
    "keep your paintings apart from anyone else's. Please post as yourself to use me here."
)


def gave_up(missing: str, minutes: int) -> str:
    return (
        f"I didn't get your {missing} within {minutes} min, so I stopped waiting. "
        "Send /paint whenever you want to try again."
    )


ASK_PAINTING2: Final = (
    "Now send the second painting, whose style I blend in, as a photo or as a file."
)


def album_size(images: int) -> str:
    return (
        "An album for /paint needs your photo first, then the painting, and to blend two "
        f"paintings the second one: two or three images. This one has {images}."
    )


def album_with_style(images: int) -> str:
    return (
        "With a saved style, an album for /paint holds your photo, and to blend the style with "
        f"a painting, that painting: one or two images. This one has {images}."
    )


# ----------------------------------------------------------------------------------------------
# Where the bot may paint (Discord)


def only_in(channels: Sequence[str]) -> str:
    return f"I only paint in {', '.join(channels)}. See you there!"


def missing_permissions(labels: Sequence[str], markup: Markup) -> str:
    names = ", ".join(markup.strong(label) for label in labels)
    plural = "s" if len(labels) > 1 else ""
    return (
        f"I can't paint in this channel: I'm missing the {names} permission{plural} here. "
        "Ask a server admin to grant it to my role in this channel, or use me in another channel."
    )


# ----------------------------------------------------------------------------------------------
# Style challenges


def bad_duration(text: str) -> str:
    return (
        f"I can't read the duration “{clip(text, 20)}”. Use a number and a unit: 30m, 12h, 3d, "
        "1d12h or 1w (m minutes, h hours, d days, w weeks)."
    )


def duration_out_of_range(text: str, seconds: float) -> str:
    return f"A challenge runs from 10 minutes to 30 days; “{clip(text, 20)}” is {span(seconds)}."


DURATION_RANGE: Final = "A challenge runs from 10 minutes to 30 days."
NO_TITLE: Final = "Give the challenge a title."
LONG_TITLE: Final = "Keep the title under 100 characters."
ALREADY_ENDED: Final = "That challenge has already ended."
VOTING_CLOSED: Final = "Voting has closed."
SELF_VOTE: Final = "You can't vote for your own entry."
NOT_YOUR_ENTRY: Final = "Only the member who entered it or an organiser can withdraw it."
WITHDRAW_CLOSED: Final = "The challenge has ended; entries can no longer be withdrawn."
ENTRY_GONE: Final = "That entry was withdrawn."
CHALLENGE_GONE: Final = "I can't find that challenge."
NO_OPEN_CHALLENGE: Final = "There is no open challenge here."
STALE_BUTTON: Final = "That button is no longer valid."


def no_challenge_yet(where: str) -> str:
    return f"There is no challenge {where} yet."


def entries_closed(title: str) -> str:
    return f"The challenge “{title}” has ended; entries are closed."


def entry_limit(limit: int) -> str:
    return f"You already have {count(limit, 'entry')} in this challenge; withdraw one first."


def challenge_exists(challenge: Challenge, markup: Markup) -> str:
    return (
        f"This channel already has an open challenge: {challenge.title}, "
        f"ends {markup.date(challenge.ends_at)}."
    )


def organisers_only(action: str, who: str, things: str = "challenges") -> str:
    return f"Only organisers ({who}) can {action} {things}."


def announcement(challenge: Challenge, *, how: str, limit: int, markup: Markup) -> Text:
    return Text(
        f"🏁 Style challenge: {challenge.title}",
        (
            f"Paint your own photo in the style of this painting: {how} (up to "
            f"{count(limit, 'entry')} each). Vote with the button under your favourite entry; "
            "votes stay hidden until the end.",
            "",
            f"Ends {markup.date(challenge.ends_at)}.",
        ),
    )


TEXT_CHANNELS_ONLY: Final = "Start a challenge in a text channel; I'll open its thread."
CHALLENGE_NOT_POSTED: Final = (
    "I couldn't post the challenge here (I need to send messages, attach files, create public "
    "threads and manage messages to pin the painting)."
)


def pinned_painting(challenge: Challenge, markup: Markup) -> str:
    return (
        f"🖼️ The painting for {markup.quoted(challenge.title)}. Enter with `/challenge enter` "
        "and vote with the buttons under each entry."
    )


def challenge_on(challenge: Challenge, where: str, markup: Markup) -> str:
    return f"The challenge {markup.quoted(challenge.title)} is on: {where}"


def challenge_closed_by_you(challenge: Challenge, *, cancelled: bool, markup: Markup) -> str:
    title = markup.quoted(challenge.title)
    if cancelled:
        return f"Cancelled the challenge {title}."
    return f"Ended the challenge {title}; the results are being posted."


def entry_queued(challenge: Challenge, markup: Markup) -> str:
    return f"Your entry for {markup.quoted(challenge.title)} is in the queue."


def entry_in(entry: Entry, markup: Markup) -> str:
    return f"{markup.member(entry.user_id, entry.user_name) or entry.user_name}, your entry is in!"


def entry(entry: Entry, challenge: Challenge, markup: Markup) -> Text:
    return Text(
        f"🖼️ Entry {entry.id} by {markup.name(entry.user_name, 40)}",
        (f"For {markup.quoted(challenge.title)}. Votes stay hidden until the end.",),
    )


def voted(result: VoteResult, markup: Markup) -> str:
    name = markup.name(result.entry.user_name, 40)
    if result.unchanged:
        said = f"Your vote is already on {name}'s entry."
    elif result.moved_from is not None:
        before = markup.name(result.moved_from.user_name, 40)
        said = f"Moved your vote from {before}'s entry to {name}'s."
    else:
        said = f"Voted for {name}'s entry."
    return f"{said} You can move it until the challenge ends; counts stay hidden until then."


def withdrew(entry: Entry, by_user: str, markup: Markup) -> str:
    whose = "your" if entry.user_id == by_user else f"{markup.name(entry.user_name, 40)}'s"
    return f"Withdrew {whose} entry and its votes."


COUNTS_SENT: Final = "I've sent you the vote counts in a private message."
COUNTS_NEED_A_CHAT: Final = (
    "To see the vote counts while it runs, start a private chat with me, then ask again here."
)


STANDINGS_SHOWN: Final = 25  # entries listed in the standings; the rest are counted


def standings(
    challenge: Challenge,
    ranked: Sequence[Standing],
    *,
    votes: bool,
    markup: Markup,
    links: dict[int, str] | None = None,
) -> Text:
    """The entries of a challenge: ranked with their votes, or (``votes=False``, while it runs
    for members) in the order they came, without counts. ``links``: entry id -> its message."""
    running = challenge.state is ChallengeState.OPEN
    lines = []
    if running:
        lines.append(f"Open until {markup.date(challenge.ends_at)}.")
        if not votes:
            lines.append("Vote counts are hidden until the end.")
    else:
        lines.append("This challenge has ended.")
    lines.append("")
    if not ranked:
        lines.append("No entries yet." if running else "There were no entries.")
    ordered = ranked if votes else sorted(ranked, key=lambda s: s.entry.id)
    for index, standing in enumerate(ordered[:STANDINGS_SHOWN], start=1):
        item = standing.entry
        who = markup.member(item.user_id, item.user_name) or item.user_name
        shown = markup.link(f"entry {item.id}", (links or {}).get(item.id))
        if not votes:
            lines.append(f"• {who}: {shown}")
            continue
        medal = f"{MEDALS[standing.place - 1]} " if standing.place and not running else ""
        lines.append(f"{index}. {medal}{who}: {shown}, {count(standing.votes, 'vote')}")
    if len(ordered) > STANDINGS_SHOWN:
        lines.append(f"… and {count(len(ordered) - STANDINGS_SHOWN, 'more entry')}.")
    return Text(f"🏁 {challenge.title}", tuple(lines))


def outcome(result: Outcome, markup: Markup) -> str:
    """How a challenge ended, for everyone in its channel."""
    challenge = result.challenge
    title = markup.quoted(challenge.title)
    if result.cancelled:
        by = markup.member(challenge.closed_by, None) if challenge.closed_by else None
        return (
            f"✖️ The challenge {title} was cancelled{f' by {by}' if by else ''}; there is no winner."
        )
    lines = [
        f"🏆 The challenge {title} has ended: {count(result.entries, 'entry')}, "
        f"{count(result.voters, 'voter')}. Voting is closed."
    ]
    if not result.podium:
        lines.append(
            "No votes were cast, so there is no winner."
            if result.entries
            else "No entries, so there is no winner."
        )
    else:
        lines.append(
            " · ".join(
                f"{MEDALS[s.place - 1]} {markup.member(s.entry.user_id, s.entry.user_name)} "
                f"({count(s.votes, 'vote')})"
                for s in result.podium
                if s.place is not None
            )
        )
    if result.tie_broken:
        lines.append("Ties on votes went to the earlier entry.")
    return "\n".join(lines)


def podium_lines(standing: Standing) -> tuple[str, str, str]:
    """What the podium picture says of a place: ``("1st", "Bob", "3 votes")`` (drawn text: no
    markup, no emoji)."""
    number = standing.place or 1
    return PLACES[number - 1], clip(standing.entry.user_name, 40), count(standing.votes, "vote")


def place(standing: Standing, markup: Markup) -> str:
    """``🥇 1st: Bob``."""
    number = standing.place or 1
    return f"{MEDALS[number - 1]} {PLACES[number - 1]}: {markup.name(standing.entry.user_name, 40)}"


def thread_closed(url: str) -> str:
    return f"This challenge has ended; voting is closed. {url}"


LEADERBOARD_LEGEND: Final = "wins = first places · podiums = top-three places"


def leaderboard(rows: Sequence[LeaderboardRow], where: str, markup: Markup) -> Text:
    if not rows:
        return Text(
            "🏆 Challenge leaderboard", (f"No challenge has been decided in this {where} yet.",)
        )
    return Text(
        "🏆 Challenge leaderboard",
        tuple(
            f"{index}. {markup.member(row.user_id, row.user_name) or row.user_name}: "
            f"{count(row.wins, 'win')}, {count(row.podiums, 'podium')}"
            for index, row in enumerate(rows, start=1)
        ),
    )


# ----------------------------------------------------------------------------------------------
# The gallery (Discord: embeds; Telegram: a contact sheet)


def gallery_empty(whose: str, page: int) -> str:
    return f"No paintings in {whose} gallery yet." if page == 0 else "No more paintings."


def gallery_page(whose: str, page: int, pages: int) -> str:
    return f"🖼️ {whose[:1].upper()}{whose[1:]} gallery, page {page + 1} of {pages}"


def next_page(command: str, page: int, pages: int) -> str:
    """Under a page of a sheet (Telegram): how to see the next one, if there is one."""
    return f"{command} {page + 2} shows the next page." if page + 1 < pages else ""


def need_image(role: str, usage: str) -> str:
    return f"I need the {role}: send it with the caption {usage}, or reply to it."


# ----------------------------------------------------------------------------------------------
# The style library


STYLE_NAME_RULE: Final = (
    "Style names are 2 to 32 letters (a to z), digits, hyphens or underscores, like starry-night."
)
STYLES_PER_PAGE_HINT: Final = "Paint with one by its name."
PAINTING_AND_STYLE: Final = "Give either a painting or a saved style, not both."


def painting_and_style(how_to_blend: str) -> str:
    """A painting and a saved style were given: one of them, or a blend of the two."""
    return f"{PAINTING_AND_STYLE} To blend the style with a painting, {how_to_blend}."


# ----------------------------------------------------------------------------------------------
# Blends of two paintings


BLEND_DISCORD: Final = "attach that painting as painting2"
BLEND_WITH_STYLE_TELEGRAM: Final = "add blend=50 to the caption"


def blend_needs_second(how: str) -> str:
    """blend= was given without a second painting to blend in."""
    return f"blend sets how much of a second painting's style to mix in, so it needs one: {how}."


STYLES_IN_SERVERS: Final = (
    "Saved styles belong to a server. In a direct message, attach a painting instead."
)


def bad_style_name(name: str, suggestion: str | None, markup: Markup) -> str:
    text = f"{markup.quoted(clip(name.strip(), 40))} can't be a style name. {STYLE_NAME_RULE}"
    return f"{text} Try {markup.quoted(suggestion)}." if suggestion else text


def no_style_name(usage: str) -> str:
    return f"Name the style: {usage}. {STYLE_NAME_RULE}"


def style_exists(name: str, markup: Markup) -> str:
    return (
        f"There is already a style called {markup.quoted(name)} here. Remove it first, or choose "
        "another name."
    )


def same_painting(name: str, markup: Markup) -> str:
    return f"That painting is already saved here as {markup.quoted(name)}."


def no_such_style(name: str, close: Sequence[str], markup: Markup) -> str:
    text = f"There is no style called {markup.quoted(clip(name.strip(), 40))} here."
    if close:
        return f"{text} Did you mean {both(markup.quoted(c) for c in close)}?"
    return f"{text} /style list shows the saved ones."


def library_full(limit: int) -> str:
    return f"This library is full ({count(limit, 'style')}). Remove one with /style remove first."


def style_added(name: str, where: str, how: str, markup: Markup) -> str:
    return f"Saved {markup.quoted(name)} in this {where}'s styles. Paint with it: {how}."


def style_removed(name: str, markup: Markup) -> str:
    return (
        f"Removed the style {markup.quoted(name)}. Paintings already waiting with it still paint."
    )


def no_styles(where: str) -> str:
    return f"No styles are saved in this {where} yet. Organisers add one with /style add."


def no_more_styles(pages: int) -> str:
    verb = "is" if pages == 1 else "are"
    return f"There {verb} only {count(pages, 'page')} of styles."


def styles_page(total: int, page: int, pages: int, where: str) -> str:
    """The caption of a contact sheet of styles."""
    paged = f", page {page + 1} of {pages}" if pages > 1 else ""
    return f"🎨 This {where}'s styles: {count(total, 'style')}{paged}. {STYLES_PER_PAGE_HINT}"


def painting_or_style(how: str) -> str:
    return f"Give a painting to take the style from, or a saved style ({how})."


STYLE_USAGE: Final = (
    "The chat's saved styles:\n"
    "• /style add starry-night: as the caption of the painting (or in reply to it); group "
    "administrators only.\n"
    "• /style list: the styles, as one picture (/style list 2 for the next page).\n"
    "• /style remove starry-night: administrators only.\n"
    "Paint with one: /paint style=starry-night as the caption of your photo."
)


# ----------------------------------------------------------------------------------------------
# "Paint with Atelier" on a message (Discord)


PAINT_WITH: Final = "Paint with Atelier"  # the message command, and its form's title
NO_IMAGE_IN_MESSAGE: Final = (
    "That message holds no image to paint. Use Paint with Atelier on a message with a photo "
    "attached."
)
FORM_STYLE: Final = "A saved style"
FORM_STYLE_HINT: Final = "One of this server's styles (/style list)"
FORM_PAINTING: Final = "Or a painting"
FORM_PAINTING_HINT: Final = "An image whose style to paint the photo in"
FORM_HOW: Final = "pick one in the form"
