"""Errors a member caused, each with its own message for the member.

One mapping, :func:`bot.replies.error_reply`, used by both platforms, turns a
:class:`UserFacingError` into a short reply visible to the member. Anything that is not a
``UserFacingError`` is a bug or an outage: it is logged with a reference id and answered
politely, never shown as a traceback.

    UserFacingError
    ├── InvalidImage        the photo or painting cannot be used (names which, and why)
    ├── InvalidOptions      an option out of range (names it and what is accepted)
    ├── LimitReached        the member already has a painting queued or running
    ├── QueueFull           the queue (global or this chat's) is full; says when to retry
    ├── NotAllowed          not the owner or a moderator, or not in an allowed channel
    ├── JobNotFound         no such painting (or it has expired)
    ├── NotAvailable        the inputs of an old painting were deleted after the retention period
    └── Paused              the job queue (Redis, in the scaled mode) cannot be reached just now
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An error the member caused; ``message`` is safe and useful to show them."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(UserFacingError):
    pass


class InvalidOptions(UserFacingError):
    pass


class LimitReached(UserFacingError):
    pass


class QueueFull(UserFacingError):
    pass


class NotAllowed(UserFacingError):
    pass


class JobNotFound(UserFacingError):
    pass


class NotAvailable(UserFacingError):
    pass


class Paused(UserFacingError):
    pass
