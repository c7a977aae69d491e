"""The style targets of recent paintings, so that a painting used again is analysed once.

Style targets are computed once per painting, size and settings (under ``torch.inference_mode``)
and kept in a bounded LRU: a challenge's painting, or a re-roll, reuses them. A painting can be
pinned by its digest (a style library's paintings): its entries are never evicted while it is
pinned and do not count against the bound, so the other paintings keep their room.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Final

from PIL import Image
from torch import Tensor

DEFAULT_CACHE_SIZE: Final = 32  # unpinned style-target entries (one per painting, size, settings)

StyleKey = tuple[object, ...]  # the painting's digest first, then what else the targets depend on


class StyleCache:
    """A bounded LRU of painting Gram matrices, keyed by painting digest, size and settings.

    ``max_entries`` bounds the entries of unpinned paintings; a pinned painting's entries are
    kept in addition, whatever their number, until it is unpinned.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_SIZE) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[StyleKey, dict[str, Tensor]] = OrderedDict()
        self._pinned: set[str] = set()
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
        self._evict()

    def pin(self, digest: str) -> None:
        """Keep every entry of the painting with this digest, present and future."""
        self._pinned.add(digest)

    def unpin(self, digest: str) -> None:
        """Let this painting's entries be evicted again (the least recently used first)."""
        self._pinned.discard(digest)
        self._evict()

    def is_pinned(self, digest: str) -> bool:
        return digest in self._pinned

    @property
    def pinned(self) -> frozenset[str]:
        return frozenset(self._pinned)

    def clear(self) -> None:
        """Forget every entry; pins stay (a pinned painting is analysed again at its next use)."""
        self._entries.clear()

    def _evict(self) -> None:
        unpinned = [key for key in self._entries if key[0] not in self._pinned]
        for key in unpinned[: max(0, len(unpinned) - self.max_entries)]:
            del self._entries[key]


def painting_digest(img: Image.Image) -> str:
    """A hash of the painting's pixels (not its file bytes: re-encodings of one image agree)."""
    h = hashlib.sha256()
    h.update(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()
