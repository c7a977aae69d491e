"""Members' images on their way in: checked by the engine's rules, stored once by content hash.

- :meth:`Inputs.check`: the headers here (never a pixel decoded in this process, a few at a time
  off the event loop); in full in the sandbox's capped child process, one at a time, when there
  is a :class:`~bot.sandbox.Sandbox`. :class:`~bot.errors.InvalidImage` says what is wrong.
- :meth:`Inputs.store`: written owner-only under the SHA-256 of their bytes (a painting shared by
  many jobs is kept once) and *claimed* until :meth:`Inputs.release`, so the hourly sweep keeps
  them until their job's row exists (see :class:`bot.housekeeping.InputClaims`).
- :meth:`Inputs.claim`: a re-roll claims the stored inputs of the painting it repaints.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from bot import housekeeping
from bot.errors import InvalidImage
from bot.sandbox import DecoderFailed, Sandbox
from bot.store import Store
from engine import files, images

log = logging.getLogger(__name__)

CHECKS_AT_ONCE: Final = 2  # header checks running at the same time


class Inputs:
    def __init__(self, folder: Path, *, max_bytes: int, sandbox: Sandbox | None = None) -> None:
        self.folder = folder
        self.claims = housekeeping.InputClaims()
        self._max_bytes = max_bytes
        self._sandbox = sandbox
        self._checks = asyncio.Semaphore(CHECKS_AT_ONCE)

    async def check(self, data: bytes, role: str) -> images.ImageInfo:
        """Check an image by the engine's rules; :class:`InvalidImage` if unfit.

        A picture the sandbox cannot open for want of memory or time is left to the engine.
        """
        try:
            async with self._checks:
                info = await asyncio.to_thread(
                    images.admit, data, role=role, max_bytes=self._max_bytes
                )
            if self._sandbox is not None:
                await self._sandbox.check(data, role=role, max_bytes=self._max_bytes)
        except images.ImageError as error:
            raise InvalidImage(error.message) from None
        except DecoderFailed as error:
            # Not the member's fault as far as anyone can tell; the engine decides.
            log.info(
                "a %s was not decoded in the sandbox (%s); the engine checks it", role, error.reason
            )
        return info

    async def store(self, *images: bytes) -> tuple[str, ...]:
        """The paths of ``images`` (photo, painting, a blend's second painting), in order,
        stored and claimed (release them)."""
        return await asyncio.to_thread(self._store, images)

    async def claim(self, paths: tuple[str, ...]) -> bool:
        """Claim stored inputs for a new job; False (nothing claimed) if one is gone."""
        return await asyncio.to_thread(self._claim, paths)

    def release(self, paths: Iterable[str]) -> None:
        self.claims.release(paths)

    def delete_unused(self, store: Store, paths: Iterable[str]) -> int:
        """Delete each of ``paths`` that no kept job uses and nobody claims; how many went."""
        return self.claims.delete_unused(store, paths)

    def _store(self, images: tuple[bytes, ...]) -> tuple[str, ...]:
        paths = []
        with self.claims.locked():
            for data in images:
                name = f"{hashlib.sha256(data).hexdigest()}{housekeeping.INPUT_SUFFIX}"
                path = self.folder / name
                if not path.exists():
                    files.write_private(path, data)
                paths.append(str(path))
            self.claims.hold(paths)
        return tuple(paths)

    def _claim(self, paths: tuple[str, ...]) -> bool:
        with self.claims.locked():
            if not all(Path(path).is_file() for path in paths):
                return False
            self.claims.hold(paths)
        return True
