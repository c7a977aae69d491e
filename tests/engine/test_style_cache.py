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
