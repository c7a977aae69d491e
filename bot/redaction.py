"""Redaction: secrets kept out of every log line, and discord.py's payloads out of DEBUG.

Two logging filters, put in place once by :func:`install` after logging is configured:

- :class:`Redactor`, on every root handler, so it sees every record that is written out, from
  any logger: it replaces each secret (the :class:`bot.settings.Secret` values, also
  percent-encoded) and every Discord interaction token with ``***`` in the message, its
  arguments, the formatted exception (an aiohttp ``ClientResponseError`` carries the URL
  ``.../file/bot<TOKEN>/...``) and the stack. It formats the record once itself, so no handler
  formats the exception again from the live traceback.
- :class:`DiscordPayloads`, on discord.py's loggers: a gateway event, a request or response body
  becomes a one-line summary (``<gateway op=0 t=INTERACTION_CREATE>``), and interaction tokens
  leave the URLs. At DEBUG discord.py logs every event whole: members' messages, names and each
  interaction's token.

:func:`install` also routes uncaught exceptions (``sys.excepthook`` and ``threading.excepthook``)
through logging: Python prints those to stderr itself, past every filter.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

from bot.settings import Secret

REDACTED: Final = "***"
# discord.py's loggers that write payloads, request URLs or bodies.
DISCORD_LOGGERS: Final = (
    "discord.gateway",
    "discord.http",
    "discord.webhook.async_",
    "discord.webhook.sync",
    "discord.client",
    "discord.state",
    "discord.shard",
)
# An interaction token is base64 of "interaction:<id>:<secret>", so it always starts with the
# same 16 characters; webhook URLs carry a token after the webhook's id.
_INTERACTION_TOKEN: Final = re.compile(r"aW50ZXJhY3Rpb246[A-Za-z0-9_.\-]+")
_WEBHOOK_URL_TOKEN: Final = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]{20,}")
_TOKEN_FIELD: Final = re.compile(r"""(["']token["']\s*:\s*["'])[^"']+""", re.IGNORECASE)
_FORMATTER: Final = logging.Formatter()


def secret_values(settings: object) -> tuple[str, ...]:
    """Every non-empty :class:`~bot.settings.Secret` value in a tree of settings dataclasses."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, Secret):
            if value.value:
                found.append(value.value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for item in dataclasses.fields(value):
                walk(getattr(value, item.name))

    walk(settings)
    return tuple(dict.fromkeys(found))


def redact_discord_tokens(text: str) -> str:
    """``text`` without Discord interaction or webhook tokens."""
    text = _INTERACTION_TOKEN.sub(REDACTED, text)
    text = _WEBHOOK_URL_TOKEN.sub(rf"\g<1>{REDACTED}", text)
    return _TOKEN_FIELD.sub(rf"\g<1>{REDACTED}", text)


class Redactor(logging.Filter):
    """Replaces secrets in a record's message, arguments, exception and stack text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        variants = {
            form for secret in secrets if secret for form in (secret, quote(secret, safe=""))
        }
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(variants, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        """``text`` with every secret and Discord token replaced by ``***``."""
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        return redact_discord_tokens(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message: keep both, redacted
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info is not None and record.exc_info[0] is not None:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
            # The handler's formatter prints exc_text; without exc_info it cannot format the
            # live exception again, secrets and all.
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class DiscordPayloads(logging.Filter):
    """Summarises payloads in discord.py's records and strips interaction tokens from them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_discord_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_summary(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            if "%(" in str(record.msg):
                record.args = {key: _summary(value) for key, value in record.args.items()}
            else:  # a lone dict argument: logging keeps it as the mapping itself
                record.args = (_summary(record.args),)
        return True


def _summary(value: Any) -> Any:
    """A payload as one short line; other values as they are, without tokens."""
    if isinstance(value, Mapping):
        if "op" in value:
            return f"<gateway op={value.get('op')} t={value.get('t')}>"
        return f"<payload of {len(value)} fields>"
    if isinstance(value, list):
        return f"<payload of {len(value)} items>"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, tuple) and hasattr(value, "type") and hasattr(value, "data"):
        return f"<websocket message {value.type!s}>"  # aiohttp's WSMessage
    if isinstance(value, str):
        if value.lstrip().startswith(("{", "[")):
            return f"<payload of {len(value)} characters>"
        return redact_discord_tokens(value)
    return value


def install(secrets: Iterable[str], *, root: logging.Logger | None = None) -> Redactor:
    """Put both filters in place; call once, after the root handlers exist.

    Returns the :class:`Redactor`, whose :meth:`Redactor.redact` also serves text that goes
    to the terminal without logging.
    """
    redactor = Redactor(secrets)
    for handler in (root or logging.getLogger()).handlers:
        handler.addFilter(redactor)
    payloads = DiscordPayloads()
    for name in DISCORD_LOGGERS:
        logging.getLogger(name).addFilter(payloads)
    _route_uncaught_exceptions()
    return redactor


def _route_uncaught_exceptions() -> None:
    """Uncaught exceptions (main thread and other threads) go through logging, so redacted.

    Python prints those itself, straight to stderr, past every logging filter.
    """
    uncaught = logging.getLogger("atelier.uncaught")

    def main_hook(
        kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, trace)
            return
        uncaught.critical("uncaught exception", exc_info=(kind, error, trace))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "a thread"
        trace = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
        uncaught.error("uncaught exception in %s", name, exc_info=trace)

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
