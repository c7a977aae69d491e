"""A style library's paintings, pinned in the engine's style cache and warmed while it is idle.

The bot sends :class:`protocol.PinStyle` for each library painting and
:class:`protocol.UnpinStyle` when one is removed. A pin is taken at once, in message order: the
painting is read (within the engine's limits) and its pixel digest pinned in the
:class:`style_cache.StyleCache`, so every style target made for it from then on stays. Its
targets are also computed ahead (:meth:`Stylist.warm`), but only when no painting is waiting:
a burst of pins at start-up never holds up a member's job; the bot is told when they are
(:class:`protocol.StyleWarmed`). Two paths to the same pixels share
one pin, kept until both are unpinned.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from PIL import Image

from engine import images, protocol, schedule
from engine.style_cache import painting_digest

if TYPE_CHECKING:
    from engine.stylize import Stylist

log = logging.getLogger(__name__)


class PinnedStyles:
    """The pins of one engine process: path -> digest, and the warm-ups still to do."""

    def __init__(
        self, stylist: Stylist, config: protocol.EngineConfig, limit: int = protocol.MAX_PINNED
    ) -> None:
        self.stylist = stylist
        self.config = config
        self.limit = limit
        self._digests: dict[str, str] = {}  # painting path -> pixel digest
        self._warm: deque[protocol.PinStyle] = deque()

    @property
    def paths(self) -> list[str]:
        return list(self._digests)

    @property
    def warming(self) -> bool:
        """Whether some pinned painting's targets are still to be computed."""
        return bool(self._warm)

    def handle(self, message: protocol.PinStyle | protocol.UnpinStyle) -> None:
        if isinstance(message, protocol.PinStyle):
            self.pin(message)
        else:
            self.unpin(message.painting_path)

    def pin(self, message: protocol.PinStyle) -> None:
        path = message.painting_path
        if path in self._digests:
            return
        if len(set(self._digests.values())) >= self.limit:
            log.warning("style %s not pinned: %d paintings are pinned already", path, self.limit)
            return
        try:
            painting = self._read(path)
        except (OSError, images.ImageError) as error:
            log.warning("style %s not pinned: %s", path, getattr(error, "message", error))
            return
        digest = painting_digest(painting)
        self._digests[path] = digest
        self.stylist.cache.pin(digest)
        self._warm.append(message)
        log.info("style %s pinned (%s)", path, digest[:12])

    def unpin(self, path: str) -> None:
        digest = self._digests.pop(path, None)
        self._warm = deque(m for m in self._warm if m.painting_path != path)
        if digest is None:
            return
        if digest not in self._digests.values():
            self.stylist.cache.unpin(digest)
        log.info("style %s unpinned", path)

    def warm_next(self) -> protocol.StyleWarmed | None:
        """Compute the style targets of the next pinned painting waiting for it; what to tell
        the bot when they are (None: nothing was warmed)."""
        if not self._warm:
            return None
        message = self._warm.popleft()
        started = time.perf_counter()
        quality = message.quality or schedule.DEFAULT_QUALITY
        try:
            options = protocol.PaintOptions(quality=quality).validate()
            painting = self._read(message.painting_path)
            settings = self.stylist.settings_for(options, preview_every=0.0)
            self.stylist.warm(painting, settings)
        except (OSError, images.ImageError, protocol.OptionError) as error:
            # Still pinned: its targets are kept from its first use on.
            log.warning(
                "style %s not warmed: %s",
                message.painting_path,
                getattr(error, "message", None) or error,
            )
            return None
        seconds = time.perf_counter() - started
        log.info("style %s warmed in %.2fs", message.painting_path, seconds)
        return protocol.StyleWarmed(message.painting_path, seconds)

    def _read(self, path: str) -> Image.Image:
        return images.load_path(
            path,
            role="painting",
            max_bytes=self.config.max_input_bytes,
            max_pixels=self.config.max_pixels,
        ).convert("RGB")
