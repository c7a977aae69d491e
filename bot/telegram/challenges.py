"""Style challenges in Telegram groups: the same rules as on Discord, in a simpler form.

    build_app(settings.telegram, service, challenges)   # adds TelegramChallenges (bot.telegram)

Commands (in groups; organisers are the group's administrators):

- ``/challenge start <duration> <title>`` as the caption of the painting (photo or image file),
  or in reply to a message holding it: announces the challenge in the group.
- ``/challenge enter [strength=N] [keep_colors]`` as the caption of a photo, or in reply to one:
  queues the entry with the usual status message; once painted, the entry is posted in the
  group with inline **Vote** and **Withdraw** buttons (typed callback data ``vote:<entry>``,
  ``withdraw:<entry>``: ids only, so they work after a restart).
- ``/challenge standings`` (the entries; the counts once it has ended, or while it runs in a
  private message to an administrator who asks, so the group never sees them early),
  ``/challenge end``, ``/challenge cancel``, ``/challenge leaderboard``.

The announcement (the painting, captioned) is pinned in the group while the challenge runs, as
on Discord (the bot needs to be an administrator allowed to pin; without it the challenge runs
unpinned), and unpinned when it ends. The results (one podium picture of the top three, place
and votes drawn on it, captioned with the text) are posted in the group when the challenge
closes, also after a restart if the deadline passed while the bot was down.
"""

from __future__ import annotations

import logging
from functools import partial

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from bot import replies
from bot.challenges import (
    Challenges,
    ChallengeState,
    NoChallenge,
    NotOrganiser,
    Outcome,
    parse_duration,
    podium_picture,
)
from bot.errors import InvalidImage, NotAllowed
from bot.jobs import Finished, MessageRef
from bot.options import parse
from bot.replies import PLAIN, Plain
from bot.sandbox import Sandbox
from bot.telegram.app import (
    MESSAGE_LIMIT,
    PLATFORM,
    Feature,
    ImageRef,
    TelegramApp,
    image_in,
    member_name,
    replying_to,
)
from bot.telegram.status import CAPTION_LIMIT, StatusBoard

log = logging.getLogger(__name__)

STALE = ("vote:", "withdraw:")
USAGE = (
    "Style challenges:\n"
    "• /challenge start 3d Title: as the caption of the painting (or in reply to it); "
    "administrators only. Durations: 30m, 12h, 3d, 1d12h, 1w.\n"
    "• /challenge enter: as the caption of your photo (or in reply to it); options as for "
    "/paint, e.g. strength=7 keep_colors.\n"
    "• /challenge standings, /challenge leaderboard\n"
    "• /challenge end, /challenge cancel: administrators only."
)


class VoteButton(CallbackData, prefix="vote"):
    entry: int


class WithdrawButton(CallbackData, prefix="withdraw"):
    entry: int


class TelegramChallenges(Feature):
    """The /challenge router and the entry buttons on a :class:`TelegramApp`."""

    def __init__(
        self, app: TelegramApp, challenges: Challenges, sandbox: Sandbox | None = None
    ) -> None:
        """``sandbox``: where the podium picture is drawn."""
        self.app = app
        self.bot: Bot = app.bot
        self.core = challenges
        self.sandbox = sandbox or Sandbox()
        self.router = Router(name="challenges")
        self.router.message.register(self._on_command, Command("challenge"))
        self.router.callback_query.register(self._on_vote, VoteButton.filter())
        self.router.callback_query.register(self._on_withdraw, WithdrawButton.filter())
        self.router.callback_query.register(self._on_stale, F.data.startswith(STALE))
        app.add_feature(self)
        challenges.on_closed(PLATFORM, self.announce)

    @property
    def _limit(self) -> int:
        """Refuse before downloading: Telegram's download cap for bots, or the host's limit."""
        return self.app.image_limit

    async def is_organiser(self, chat_id: int, user_id: int) -> bool:
        return await self.app.is_admin(chat_id, user_id)

    async def _require_organiser(self, message: Message, action: str) -> None:
        assert message.from_user is not None
        if not await self.is_organiser(message.chat.id, message.from_user.id):
            raise NotOrganiser(replies.organisers_only(action, "the group's administrators"))

    # -- commands ------------------------------------------------------------------------------

    async def _on_command(self, message: Message, command: CommandObject) -> None:
        if message.chat.type not in ("group", "supergroup"):
            raise NoChallenge("Style challenges run in groups. Add me to a group and try there.")
        action, _, rest = (command.args or "").strip().partition(" ")
        action = action.lower()
        if action == "start":
            await self._start(message, rest)
        elif action == "enter":
            await self._enter(message, rest)
        elif action == "standings":
            await self._standings(message)
        elif action in ("end", "cancel"):
            await self._end(message, cancel=action == "cancel")
        elif action == "leaderboard":
            await self._leaderboard(message)
        else:
            await self.app.reply(message, USAGE)

    def _image(self, message: Message, role: str, usage: str) -> ImageRef:
        ref = image_in(message, role=role, limit=self._limit) or image_in(
            message.reply_to_message, role=role, limit=self._limit
        )
        if ref is None:
            raise InvalidImage(replies.need_image(role, usage))
        return ref

    async def _download(self, ref: ImageRef) -> bytes:
        return await self.app.download(ref)

    async def _start(self, message: Message, args: str) -> None:
        await self._require_organiser(message, "start")
        duration_text, _, title = args.strip().partition(" ")
        if not duration_text or not title.strip():
            raise NoChallenge(
                "Write it as /challenge start 3d Title, on the painting or in reply to it."
            )
        seconds = parse_duration(duration_text)
        chat_id = str(message.chat.id)
        existing = self.core.open_in(PLATFORM, chat_id)
        if existing is not None:
            raise self.core.exists_error(existing, self._plain())
        ref = self._image(message, "painting", "/challenge start 3d Title")
        data = await self._download(ref)
        await self.core.check_painting(data)
        assert message.from_user is not None
        challenge = await self.core.acreate(
            platform=PLATFORM,
            community_id=chat_id,
            chat_id=chat_id,
            title=title,
            painting=data,
            painting_name=ref.name,
            organiser_id=str(message.from_user.id),
            organiser_name=member_name(message.from_user),
            duration=seconds,
        )
        text = replies.announcement(
            challenge,
            how="send it with the caption /challenge enter",
            limit=self.core.limits.challenge_entries,
            markup=self._plain(),
        )
        caption = "\n\n".join((text.headline, "\n".join(text.lines)))
        try:
            sent = await self.app.send(
                message.chat.id,
                lambda: self.bot.send_photo(
                    message.chat.id,
                    BufferedInputFile(data, "challenge.jpg"),
                    caption=caption,
                    reply_parameters=replying_to(message.message_id),
                ),
            )
        except Exception:
            self.core.discard(challenge.id)
            raise
        self.core.set_message(challenge.id, f"{message.chat.id}/{sent.message_id}")
        await self._pin(MessageRef(message.chat.id, sent.message_id), pinned=True)

    async def _enter(self, message: Message, args: str) -> None:
        challenge = self.core.require_open(PLATFORM, str(message.chat.id))
        options = parse(args)
        ref = self._image(message, "photo", "/challenge enter")
        assert message.from_user is not None
        user_id = str(message.from_user.id)
        self.core.check_may_enter(challenge, user_id)
        # The member's slot first: past a limit nothing is downloaded.
        slot = self.app.service.reserve(PLATFORM, challenge.entries_chat, user_id)
        with slot:
            data = await self._download(ref)
            job = await self.core.enter(
                challenge,
                user_id=user_id,
                user_name=member_name(message.from_user),
                photo=data,
                photo_name=ref.name,
                options=options,
                reservation=slot,
            )
        board = self.app.feature(StatusBoard)
        board.expect(job)
        await board.open(job, picture_of=data, reply_to=message.message_id)

    async def _standings(self, message: Message) -> None:
        """The entries for everyone; the counts only once it has ended, except to organisers,
        who get them in a private message (a group reply would show them to every member)."""
        challenge = self.core.latest_in(PLATFORM, str(message.chat.id))
        if challenge is None:
            raise NoChallenge(replies.no_challenge_yet("in this group"))
        assert message.from_user is not None
        running = challenge.state is ChallengeState.OPEN
        standings = self.core.standings(challenge.id)
        markup = self._plain()
        lines = [replies.standings(challenge, standings, votes=not running, markup=markup).joined()]
        if running and await self.is_organiser(message.chat.id, message.from_user.id):
            counts = replies.standings(challenge, standings, votes=True, markup=markup)
            try:
                private = message.from_user.id
                text = replies.fit(counts.joined(), MESSAGE_LIMIT)
                await self.app.send(private, partial(self.bot.send_message, private, text))
                lines.append(replies.COUNTS_SENT)
            except TelegramAPIError as error:  # e.g. they never started a chat with the bot
                log.info("challenge %d: counts not sent privately: %s", challenge.id, error)
                lines.append(replies.COUNTS_NEED_A_CHAT)
        await self.app.reply(message, "\n\n".join(lines))

    async def _end(self, message: Message, *, cancel: bool) -> None:
        await self._require_organiser(message, "cancel" if cancel else "end")
        challenge = self.core.require_open(PLATFORM, str(message.chat.id))
        assert message.from_user is not None
        by = str(message.from_user.id)
        if cancel:
            await self.core.cancel(challenge.id, by=by)
        else:
            await self.core.end(challenge.id, by=by)

    async def _leaderboard(self, message: Message) -> None:
        rows = self.core.leaderboard(PLATFORM, str(message.chat.id))
        text = replies.leaderboard(rows, "group", PLAIN)
        legend = (replies.LEADERBOARD_LEGEND,) if rows else ()
        await self.app.reply(message, "\n".join((text.joined(), *legend)))

    # -- entries and votes ---------------------------------------------------------------------

    async def deliver(self, event: Finished) -> bool:
        """Post a finished challenge painting as an entry; False when it is not one."""
        await self.core.adopt(event.job, event.result_png)  # the image written off the loop
        entry = self.core.accept(event)  # then only the rules: still open for votes?
        if entry is None:
            return False
        challenge = self.core.get(entry.challenge_id)
        chat_id = int(challenge.chat_id)
        status = MessageRef.parse(event.job.status_ref)
        reply = replying_to(status.message_id if status else None)
        try:
            # Through flood control and outages, like any result.
            sent = await self.app.send(
                chat_id,
                lambda: self.bot.send_photo(
                    chat_id,
                    BufferedInputFile(event.result_png, f"entry-{entry.id}.png"),
                    caption=replies.entry(entry, challenge, PLAIN).joined(),
                    reply_markup=entry_markup(entry.id),
                    reply_parameters=reply,
                ),
            )
        except TelegramAPIError as error:
            # No entry nobody can see or vote for; the painting goes out as an ordinary one.
            log.warning("challenge %d: entry %d not posted: %s", challenge.id, entry.id, error)
            self.core.discard_entry(entry.id)
            return False
        self.core.set_entry_message(entry.id, str(MessageRef(chat_id, sent.message_id)))
        return True

    async def _on_vote(self, query: CallbackQuery, callback_data: VoteButton) -> None:
        """A vote, from under the entry in its group only (entry ids are small numbers, and a
        client may send any data under any of the bot's messages)."""
        entry, message = self.core.entry(callback_data.entry), query.message
        if entry is not None and message is not None:
            here = str(message.chat.id)
            if here != self.core.get(entry.challenge_id).chat_id:
                raise NotAllowed(replies.NOT_THIS_MESSAGE)
        result = self.core.vote(callback_data.entry, str(query.from_user.id))
        await query.answer(replies.voted(result, PLAIN))

    async def _on_stale(self, query: CallbackQuery) -> None:
        """A vote or withdraw button whose data is not an entry id: say so, never leave the
        member's press unanswered."""
        raise NoChallenge(replies.STALE_BUTTON)

    async def _on_withdraw(self, query: CallbackQuery, callback_data: WithdrawButton) -> None:
        entry_id = callback_data.entry
        entry = self.core.entry(entry_id)
        user_id = query.from_user.id
        organiser = False
        if entry is not None and entry.user_id != str(user_id):
            chat_id = int(self.core.get(entry.challenge_id).chat_id)
            organiser = await self.is_organiser(chat_id, user_id)
        entry = self.core.withdraw(entry_id, str(user_id), organiser=organiser)
        if (posted := MessageRef.parse(entry.message_ref)) is not None:
            try:
                await self.bot.delete_message(posted.chat_id, posted.message_id)
            except Exception:
                log.warning("entry %d: could not delete its message", entry.id, exc_info=True)
        await query.answer(replies.withdrew(entry, str(user_id), PLAIN))

    # -- the end -------------------------------------------------------------------------------

    async def announce(self, outcome: Outcome) -> None:
        """The results in the group: the podium picture captioned with the text (the text
        alone when nobody placed); the challenge's painting is unpinned."""
        chat_id = int(outcome.challenge.chat_id)
        text = replies.outcome(outcome, PLAIN)
        picture = await podium_picture(outcome, self.sandbox)
        if picture is None:
            await self.app.send(chat_id, lambda: self.bot.send_message(chat_id, text))
        else:
            photo = BufferedInputFile(picture, "podium.jpg")
            caption = replies.fit(text, CAPTION_LIMIT)
            await self.app.send(
                chat_id, partial(self.bot.send_photo, chat_id, photo, caption=caption)
            )
        posted = MessageRef.parse(outcome.challenge.message_ref)
        if posted is not None:
            await self._pin(posted, pinned=False)

    async def _pin(self, ref: MessageRef, *, pinned: bool) -> None:
        """Pin (or unpin) the challenge's announcement; a group that does not let the bot pin
        keeps the challenge running unpinned."""
        try:
            if pinned:
                await self.bot.pin_chat_message(
                    ref.chat_id, ref.message_id, disable_notification=True
                )
            else:
                await self.bot.unpin_chat_message(ref.chat_id, message_id=ref.message_id)
        except TelegramAPIError as error:
            log.info(
                "challenge message %s not %s: %s", ref, "pinned" if pinned else "unpinned", error
            )

    def _plain(self) -> Plain:
        """Plain text, with dates relative to the challenges' clock."""
        return Plain(now=self.core.now())


def entry_markup(entry_id: int) -> InlineKeyboardMarkup:
    vote = VoteButton(entry=entry_id).pack()
    withdraw = WithdrawButton(entry=entry_id).pack()
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text="🗳️ Vote", callback_data=vote),
                InlineKeyboardButton(text="Withdraw", callback_data=withdraw),
            ]
        ]
    )
