"""The style targets of recent paintings, so that a painting used again is analysed once.

Style targets are computed once per painting, size and settings (under ``torch.inference_mode``)
and kept in a bounded LRU: a challenge's painting, or a re-roll, reuses them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Final

from PIL import Image
from torch import Tensor

DEFAULT_CACHE_SIZE: Final = 32  # style-target entries (one per painting, size and settings)

StyleKey = tuple[object, ...]


class StyleCache:
    """A bounded LRU of painting Gram matrices, keyed by painting hash, size and settings."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_SIZE) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[StyleKey, dict[str, Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: StyleKey) -> dict[str, Tensor] | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return found

    def put(self, key: StyleKey, grams: dict[str, Tensor]) -> None:
        self._entries[key] = grams
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def painting_digest(img: Image.Image) -> str:
    """A hash of the painting's pixels (not its file bytes: re-encodings of one image agree)."""
    h = hashlib.sha256()
    h.update(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()
