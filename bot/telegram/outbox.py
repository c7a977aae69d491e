"""Everything the bot sends to a Telegram chat goes out here, through flood control and outages.

Telegram limits how fast a bot may post in one chat and answers ``429 retry after N`` past it;
the whole chat is then closed to the bot for N seconds, for status edits and replies alike. The
:class:`Outbox` remembers that per chat, so that a reply waits for the same block a status edit
ran into (and the status board's edits wait for a block a reply ran into, see
:meth:`Outbox.blocked_for`), and it sends again after an outage (a 5xx, a dropped connection, a
timeout) instead of losing the message:

    message = await outbox.send(chat_id, lambda: bot.send_message(chat_id, text))
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError

from bot.pacing import Clock, Sleep

log = logging.getLogger(__name__)

T = TypeVar("T")

SEND_ATTEMPTS: Final = 5  # tries of one message through flood control and outages
OUTAGE_PAUSE: Final = 5.0  # seconds before the first retry after an outage (then 2x, 3x, ...)


class Outbox:
    """Sends to chats one call at a time per caller, waiting out each chat's flood control."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        attempts: int = SEND_ATTEMPTS,
        outage_pause: float = OUTAGE_PAUSE,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._attempts = attempts
        self.outage_pause = outage_pause
        self._blocked_until: dict[int, float] = {}

    def block(self, chat_id: int, seconds: float) -> None:
        """Telegram answered "retry after ``seconds``" in this chat: nothing goes out there."""
        until = self._clock() + seconds
        self._blocked_until[chat_id] = max(until, self._blocked_until.get(chat_id, until))

    def blocked_for(self, chat_id: int) -> float:
        """Seconds until this chat takes messages again (0: now)."""
        until = self._blocked_until.get(chat_id)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._blocked_until[chat_id]
            return 0.0
        return left

    async def send(self, chat_id: int, call: Callable[[], Awaitable[T]]) -> T:
        """Make ``call`` (a send to ``chat_id``) once the chat is open, again after flood
        control or an outage, up to the attempts allowed; then its error is raised."""
        for attempt in range(1, self._attempts + 1):
            wait = self.blocked_for(chat_id)
            if wait > 0:
                await self._sleep(wait)
            try:
                return await call()
            except TelegramRetryAfter as error:
                self.block(chat_id, error.retry_after)
                log.warning(
                    "telegram flood control in chat %s (try %d): waiting %ss",
                    chat_id,
                    attempt,
                    error.retry_after,
                )
                if attempt == self._attempts:
                    raise
            except (TelegramNetworkError, TelegramServerError) as error:
                # A timeout may have delivered it; a duplicate beats a loss.
                if attempt == self._attempts:
                    raise
                pause = self.outage_pause * attempt
                log.warning(
                    "telegram: sending to chat %s failed (try %d): %s; retrying in %.0fs",
                    chat_id,
                    attempt,
                    type(error).__name__,
                    pause,
                )
                await self._sleep(pause)
        raise AssertionError("unreachable")
