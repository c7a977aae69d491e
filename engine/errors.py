"""Why a painting could not be made: ``code`` is a ``protocol.ErrorCode``, ``message`` is for
people.

The worker turns these into ``protocol.JobFailed`` (or ``JobCancelled``); the CLI prints the
message on one line. Decoding problems are ``images.ImageError``; missing weights are
``weights.WeightsError``.
"""

from __future__ import annotations


class PaintError(Exception):
    """A painting that could not be made; ``code`` is a ``protocol.ErrorCode``."""

    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Cancelled(PaintError):
    """``should_stop`` returned True; raised within one objective evaluation."""

    code = "cancelled"


class OutOfMemory(PaintError):
    """Even the smaller retry did not fit on the device."""

    code = "out_of_memory"
