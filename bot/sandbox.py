"""The sandbox: decoding of member images in capped child processes, and children's environments.

The bot process holds the chat tokens, so it decodes no member image itself: admission reads
headers only (:func:`engine.images.admit`). The little decoding it still wants (the Telegram
status picture, a full check of a file, a result made to fit an upload limit, and pictures
made of several: a contact sheet, a challenge's podium) goes to :class:`Sandbox`, which runs
each request in a fresh ``python -m engine.decoder`` child:

- memory capped (``RLIMIT_AS``), CPU time capped (``RLIMIT_CPU``), no files written, and a
  wall-clock timeout after which the child is killed;
- an environment without secrets (:func:`child_environment`);
- at most ``at_once`` children at a time (an asyncio semaphore, default 1), so a burst of
  requests queues instead of multiplying the memory; the event loop never blocks on a child.

:func:`child_environment` is the one place that decides what a child process may inherit; for
children that always inherit this process's environment (``multiprocessing``'s spawn, as the
engine process is started), :func:`scrub_environment` applies the same rule to it in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Final

import engine
from engine import decoder, images

log = logging.getLogger(__name__)

# Variable names that hold secrets whatever their value: *_TOKEN (DISCORD_TOKEN,
# TELEGRAM_TOKEN, ...) and the usual words for credentials.
SECRET_NAME: Final = re.compile(
    r"(^|_)TOKEN$|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL",
    re.IGNORECASE,
)
MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024  # a thumbnail is tens of kilobytes (a fit: its budget)
MAX_STDERR_BYTES: Final = 64 * 1024
# ImageError subclasses a child may name in its answer; anything else is a broken answer.
_IMAGE_ERRORS: Final[dict[str, type[images.ImageError]]] = {
    cls.__name__: cls
    for cls in (
        images.NotAnImage,
        images.TruncatedImage,
        images.FileTooLarge,
        images.TooManyPixels,
        images.TooSmall,
        images.BadAspectRatio,
    )
}
# Where `python -m engine.decoder` finds the engine package, installed or in a checkout.
_PACKAGE_ROOT: Final = Path(engine.__file__).resolve().parent.parent


def child_environment(
    secrets: Iterable[str] = (), base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a child process: ``base`` (this process's) without any secret.

    Removed: every variable whose name marks a secret (:data:`SECRET_NAME`: ``*_TOKEN``,
    ``*SECRET*``, ``*PASSWORD*``, ``*API_KEY*``, ...) and every variable whose value contains
    one of ``secrets`` (the values of :class:`bot.settings.Secret`, whatever the variable is
    called). Nothing is read from the result here; settings stay the only reader of
    configuration.
    """
    values = [s for s in secrets if s]
    source = os.environ if base is None else base
    return {
        name: value
        for name, value in source.items()
        if not SECRET_NAME.search(name) and not any(s in value for s in values)
    }


def scrub_environment(
    secrets: Iterable[str] = (), environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Remove from ``environ`` (this process's) what :func:`child_environment` would not pass.

    For children whose environment cannot be chosen at start: ``multiprocessing``'s spawn (the
    engine process) always inherits this process's. Call it once at start-up, after the
    settings are read and before any child starts; returns the names removed.
    """
    target = os.environ if environ is None else environ
    keep = child_environment(secrets, target)
    removed = [name for name in target if name not in keep]
    for name in removed:
        del target[name]
    return removed


class DecoderFailed(Exception):
    """The child gave no usable answer. ``reason``: ``"memory"``, ``"time"`` or ``"crashed"``.

    Not the member's fault as far as anyone can tell; ``message`` is safe to show them.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Sandbox:
    """Runs decoding requests in capped child processes, ``at_once`` at a time."""

    def __init__(
        self,
        *,
        secrets: Iterable[str] = (),
        memory_bytes: int = decoder.DEFAULT_MEMORY_MB * 1024 * 1024,
        cpu_seconds: int = decoder.DEFAULT_CPU_SECONDS,
        timeout: float = 30.0,
        at_once: int = 1,
        environment: Mapping[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        """``environment`` defaults to this process's, scrubbed of ``secrets`` and secret names;
        ``command`` replaces the child's command line (tests only)."""
        if at_once < 1:
            raise ValueError(f"at_once must be at least 1, got {at_once}")
        self._env = child_environment(secrets, environment)
        self._memory_bytes = memory_bytes
        self._cpu_seconds = cpu_seconds
        self._timeout = timeout
        self._slots = asyncio.Semaphore(at_once)
        self._command = command or [
            sys.executable,
            "-B",
            "-m",
            "engine.decoder",
            f"--memory-mb={max(1, memory_bytes // (1024 * 1024))}",
            f"--cpu-seconds={cpu_seconds}",
        ]

    async def thumbnail(self, data: bytes, *, max_side: int = 256, role: str = "photo") -> bytes:
        """A JPEG of ``data``, long side at most ``max_side``, EXIF-oriented, no metadata.

        Raises an :class:`engine.images.ImageError` subclass for the member's file, or
        :class:`DecoderFailed`.
        """
        request = {"task": "thumbnail", "role": role, "max_side": max_side, "max_bytes": len(data)}
        answer, body = await self._run(request, data, role)
        length = answer.get("length")
        if not isinstance(length, int) or length != len(body):
            raise self._broken(role, f"thumbnail of {len(body)} bytes, announced {length}")
        return body

    async def fit(self, data: bytes, budget: int, *, role: str = "painting") -> tuple[bytes, str]:
        """``data`` encoded in at most ``budget`` bytes (a platform's upload limit):
        ``(bytes, "png")`` if it fits as a PNG, else ``(bytes, "jpeg")``
        (:func:`engine.images.encode_for_budget`).

        Raises an :class:`engine.images.ImageError` subclass, or :class:`DecoderFailed`.
        """
        request = {"task": "fit", "role": role, "budget": budget, "max_bytes": len(data)}
        answer, body = await self._run(request, data, role, answer_limit=budget + 4096)
        length, kind = answer.get("length"), answer.get("kind")
        if not isinstance(length, int) or length != len(body) or kind not in ("png", "jpeg"):
            raise self._broken(role, f"fit of {len(body)} bytes, announced {length} {kind}")
        return body, str(kind)

    async def sheet(
        self, tiles: Sequence[tuple[bytes, str]], *, columns: int = 4, tile: int = 192
    ) -> bytes:
        """A contact sheet: each image of ``tiles`` fitted in a square with its caption under
        it, ``columns`` wide, as a JPEG (:func:`engine.sheets.contact_sheet`). An image that
        cannot be decoded (or ``b""``) is a plain tile. Raises :class:`DecoderFailed`."""
        request = {
            "task": "sheet",
            "lengths": [len(data) for data, _ in tiles],
            "captions": [caption for _, caption in tiles],
            "columns": columns,
            "tile": tile,
        }
        return await self._picture(request, b"".join(data for data, _ in tiles))

    async def podium(self, places: Sequence[tuple[int, bytes, Sequence[str]]]) -> bytes:
        """The podium of a challenge: ``(place, image, lines)`` for up to three places, side by
        side with the lines written under each (:func:`engine.sheets.podium`), as a JPEG.
        Raises :class:`DecoderFailed`."""
        request = {
            "task": "podium",
            "lengths": [len(data) for _, data, _ in places],
            "places": [place for place, _, _ in places],
            "lines": [list(lines) for _, _, lines in places],
        }
        return await self._picture(request, b"".join(data for _, data, _ in places))

    async def _picture(self, request: dict[str, Any], data: bytes) -> bytes:
        answer, body = await self._run(request, data, "picture")
        length = answer.get("length")
        if not isinstance(length, int) or length != len(body):
            raise self._broken("picture", f"{request['task']} of {len(body)} bytes, said {length}")
        return body

    async def check(
        self, data: bytes, *, role: str = "photo", max_bytes: int = images.MAX_INPUT_BYTES
    ) -> images.ImageInfo:
        """Decode ``data`` fully (:func:`engine.images.probe`) to find damage headers hide.

        Raises an :class:`engine.images.ImageError` subclass for the member's file, or
        :class:`DecoderFailed` (for a picture too big for the memory cap, say: then only the
        engine can tell).
        """
        request = {"task": "check", "role": role, "max_bytes": max_bytes}
        answer, _ = await self._run(request, data, role)
        try:
            return images.ImageInfo(
                format=str(answer["format"]),
                width=int(answer["width"]),
                height=int(answer["height"]),
                frames=int(answer.get("frames", 1)),
            )
        except (KeyError, TypeError, ValueError):
            raise self._broken(role, f"check answer {answer!r}") from None

    async def _run(
        self,
        request: dict[str, Any],
        data: bytes,
        role: str,
        *,
        answer_limit: int = MAX_ANSWER_BYTES,
    ) -> tuple[dict[str, Any], bytes]:
        async with self._slots:
            returncode, out, err = await self._exchange(
                json.dumps(request).encode() + b"\n" + data, role, answer_limit
            )
        if err:
            log.debug("decoder said: %s", err[-2000:].decode("utf-8", "replace"))
        line, _, body = out.partition(b"\n")
        try:
            answer = json.loads(line) if line else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
                raise DecoderFailed("time", f"The {role} takes too long to open.")
            raise self._broken(role, f"exit status {returncode}, no answer")
        if answer.get("ok") is True:
            return answer, body
        if answer.get("kind") == "image":
            error = _IMAGE_ERRORS.get(str(answer.get("error")))
            message = answer.get("message")
            if error is not None and isinstance(message, str):
                raise error(message)
        if answer.get("kind") == "resources":
            raise DecoderFailed("memory", f"The {role} needs more memory to open than I allow.")
        raise self._broken(role, f"answer {answer!r}")

    async def _exchange(
        self, request: bytes, role: str, answer_limit: int
    ) -> tuple[int, bytes, bytes]:
        """Start a child, send ``request``, collect its answer; kill it past the timeout."""
        process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            cwd=_PACKAGE_ROOT,
        )
        try:
            assert process.stdin and process.stdout and process.stderr
            out, err, _ = await asyncio.wait_for(
                asyncio.gather(
                    _read(process.stdout, answer_limit),
                    _read(process.stderr, MAX_STDERR_BYTES),
                    _feed(process.stdin, request),
                ),
                self._timeout,
            )
            returncode = await asyncio.wait_for(process.wait(), self._timeout)
        except TimeoutError:
            log.warning("decoder timed out after %.0f s on a %s; killed", self._timeout, role)
            raise DecoderFailed("time", f"The {role} takes too long to open.") from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return returncode, out, err

    def _broken(self, role: str, detail: str) -> DecoderFailed:
        log.warning("decoder gave no usable answer for a %s: %s", role, detail)
        return DecoderFailed("crashed", f"I couldn't open the {role}. Try sending it again.")


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    # A child that died early (a refused file, a limit) closes its end: not our error.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stream.write(data)
        await stream.drain()
        stream.close()
        await stream.wait_closed()


async def _read(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read to end of file, keeping at most ``limit`` bytes (and draining the rest)."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)
