"""The bounded LRU of style targets and the painting digest that keys it."""

from __future__ import annotations

import io

import torch
from PIL import Image

from engine.style_cache import StyleCache, painting_digest

from ..conftest import make_painting


def grams(value: float) -> dict[str, torch.Tensor]:
    return {"relu1_1": torch.full((2, 2), value)}


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = StyleCache(max_entries=2)
    cache.put(("a",), grams(1))
    cache.put(("b",), grams(2))
    assert cache.get(("a",)) is not None  # "a" is now the most recent
    cache.put(("c",), grams(3))
    assert len(cache) == 2
    assert cache.get(("b",)) is None
    found = cache.get(("a",))
    assert found is not None and found["relu1_1"][0, 0].item() == 1
    assert (cache.hits, cache.misses) == (2, 1)
    cache.clear()
    assert len(cache) == 0 and cache.get(("c",)) is None


def test_a_painting_is_known_by_its_pixels_not_its_file() -> None:
    painting = make_painting()
    encoded = {}
    for fmt in ("PNG", "BMP"):
        buffer = io.BytesIO()
        painting.save(buffer, fmt)
        encoded[fmt] = buffer.getvalue()
    assert encoded["PNG"] != encoded["BMP"]
    digests = {
        painting_digest(Image.open(io.BytesIO(data)).convert("RGB")) for data in encoded.values()
    }
    assert digests == {painting_digest(painting)}
    assert painting_digest(make_painting(seed=8)) != painting_digest(painting)
    # The same bytes in another shape are another painting.
    reshaped = Image.frombytes("RGB", (painting.height, painting.width), painting.tobytes())
    assert painting_digest(reshaped) != painting_digest(painting)


def test_pinned_entries_survive_eviction_pressure() -> None:
    cache = StyleCache(max_entries=2)
    cache.pin("library")
    cache.put(("library", 256), grams(1))
    cache.put(("library", 512), grams(2))
    for n in range(20):  # many other paintings come and go
        cache.put((f"upload-{n}", 512), grams(3))
    assert cache.get(("library", 256)) is not None
    assert cache.get(("library", 512)) is not None
    # The bound still holds for the others: the two most recent uploads, beside the pinned ones.
    assert len(cache) == 4
    assert cache.get(("upload-19", 512)) is not None and cache.get(("upload-17", 512)) is None
    assert cache.pinned == {"library"} and cache.is_pinned("library")


def test_a_pin_covers_entries_made_later_and_an_unpin_lets_them_go() -> None:
    cache = StyleCache(max_entries=1)
    cache.put(("style", 128), grams(1))
    cache.pin("style")  # pinned after its first entry, and before its next one
    cache.put(("style", 256), grams(2))
    cache.put(("other", 256), grams(3))
    cache.put(("other", 512), grams(4))
    assert cache.get(("style", 128)) is not None and cache.get(("style", 256)) is not None
    cache.unpin("style")
    # Back under the bound at once: only the most recently used entry stays.
    assert len(cache) == 1
    assert cache.get(("style", 256)) is not None
    assert not cache.is_pinned("style")
    cache.unpin("never-pinned")  # harmless


def test_clearing_keeps_the_pins() -> None:
    cache = StyleCache(max_entries=1)
    cache.pin("style")
    cache.put(("style", 1), grams(1))
    cache.clear()
    assert len(cache) == 0 and cache.is_pinned("style")
    cache.put(("style", 2), grams(1))
    cache.put(("other", 2), grams(1))
    cache.put(("another", 2), grams(1))
    assert cache.get(("style", 2)) is not None
