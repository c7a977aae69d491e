"""Admission: whether a member may ask for a painting now, and the slots held while they do.

A request takes time between the member's command and the queue: the chat platform's download,
the header check, the sandboxed decode. Limits checked only at the end let one member start
eight requests at once and cost the bot eight downloads and eight checks for one painting. So
a member's slot is *reserved* first, before anything is downloaded:

    slot = service.reserve(platform, chat_id, user_id)   # refuses at once, with the reason
    with slot:                                          # released on leaving, whatever happens
        photo, painting = await download(...)
        job = await service.submit(request, reservation=slot)

A :class:`Reservation` counts as a queued painting in every limit (the member's own, the chat's,
the whole queue's) until the submit that uses it ends or it is released. One that is forgotten
(an adapter's bug) stops counting after :data:`RESERVATION_TTL` seconds, so nobody stays locked
out.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Final

from bot import replies
from bot.errors import LimitReached, QueueFull
from bot.jobs import Job
from bot.settings import Limits

log = logging.getLogger(__name__)

Clock = Callable[[], float]

RESERVATION_TTL: Final = 600.0  # seconds a reservation may wait for its submit


class Reservation:
    """A member's slot, held from before the download until the submit that uses it ends.

    Release it (``release()``, or leave a ``with`` / ``async with`` block); a submit given the
    reservation releases it when it ends. Releasing twice does nothing.
    """

    def __init__(
        self,
        number: int,
        platform: str,
        chat_id: str,
        user_id: str,
        created_at: float,
        on_release: Callable[[Reservation], None],
    ) -> None:
        self.number = number
        self.platform = platform
        self.chat_id = chat_id
        self.user_id = user_id
        self.created_at = created_at
        self._on_release = on_release
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._on_release(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return (
            f"<Reservation {self.number} {self.platform}/{self.user_id} in {self.chat_id} {state}>"
        )


class Admission:
    """The limits, counted over the jobs in hand and the reservations held."""

    def __init__(self, limits: Limits, clock: Clock) -> None:
        self._limits = limits
        self._clock = clock
        self._held: list[Reservation] = []
        self._numbers = itertools.count(1)

    @property
    def held(self) -> list[Reservation]:
        """Reservations still counting (released and expired ones are dropped here)."""
        cutoff = self._clock() - RESERVATION_TTL
        expired = [r for r in self._held if r.created_at < cutoff]
        for reservation in expired:
            log.warning("%r was never used or released; it no longer counts", reservation)
            reservation.release()
        return list(self._held)

    def reserve(
        self,
        platform: str,
        chat_id: str,
        user_id: str,
        *,
        active: Sequence[Job],
        waiting: Sequence[Job],
        remaining: float,
    ) -> Reservation:
        """Check the limits now (raising the member's reason) and hold a slot."""
        self.check(platform, chat_id, user_id, active=active, waiting=waiting, remaining=remaining)
        reservation = Reservation(
            next(self._numbers), platform, chat_id, user_id, self._clock(), self._drop
        )
        self._held.append(reservation)
        return reservation

    def check(
        self,
        platform: str,
        chat_id: str,
        user_id: str,
        *,
        active: Sequence[Job],
        waiting: Sequence[Job],
        remaining: float,
        exclude: Reservation | None = None,
    ) -> None:
        """Raise :class:`LimitReached` or :class:`QueueFull` if one more painting is too many.

        ``active``: the running job and the waiting ones; ``waiting``: the waiting ones;
        ``remaining``: seconds until the running job is done (for "try again in ...");
        ``exclude``: the caller's own reservation, which must not count against itself.
        """
        held = [r for r in self.held if r is not exclude]
        mine = sum(1 for j in active if j.platform == platform and j.user_id == user_id)
        mine += sum(1 for r in held if r.platform == platform and r.user_id == user_id)
        if mine >= self._limits.per_member:
            raise LimitReached(replies.in_progress(mine, self._limits.per_member))
        queued = len(waiting) + len(held)
        if queued >= self._limits.queue:
            raise QueueFull(replies.queue_full(queued, remaining))
        in_chat = sum(1 for j in waiting if j.platform == platform and j.chat_id == chat_id)
        in_chat += sum(1 for r in held if r.platform == platform and r.chat_id == chat_id)
        if in_chat >= self._limits.queue_per_chat:
            raise QueueFull(replies.chat_queue_full(in_chat, remaining))

    def _drop(self, reservation: Reservation) -> None:
        if reservation in self._held:
            self._held.remove(reservation)
