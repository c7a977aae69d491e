"""A style library's paintings: pinned in the style cache, warmed ahead, unpinned by path."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import Tensor

from engine import protocol, schedule
from engine.pinned_styles import PinnedStyles
from engine.style_cache import painting_digest
from engine.stylize import Stylist

from ..conftest import make_painting, make_photo

CONFIG = protocol.EngineConfig(device="cpu")


@pytest.fixture(autouse=True)
def quick_draft(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two scales (64 and 128 px), few steps: the targets of two sizes per painting.
    monkeypatch.setitem(schedule.PRESETS, ("draft", "cpu"), schedule.Preset(128, (3, 2)))


@pytest.fixture
def stylist(vgg_state: dict[str, Tensor]) -> Stylist:
    return Stylist(weights=vgg_state, device="cpu", cache_size=1)


def saved(tmp_path: Path, name: str, seed: int) -> str:
    path = tmp_path / name
    make_painting(seed=seed).save(path)
    return str(path)


def test_a_pinned_style_is_warmed_ahead_and_survives_eviction_pressure(
    stylist: Stylist, tmp_path: Path
) -> None:
    library = saved(tmp_path, "library.png", seed=7)
    pins = PinnedStyles(stylist, CONFIG)
    pins.pin(protocol.PinStyle(library, quality="draft"))
    assert pins.warming and len(stylist.cache) == 0  # pinned at once, warmed later
    pins.warm_next()
    assert not pins.warming
    assert len(stylist.cache) == 2  # both scales of the draft preset
    settings = stylist.settings_for(protocol.PaintOptions(quality="draft"), preview_every=0.0)
    misses = stylist.cache.misses
    stylist.paint(make_photo(128, 96), make_painting(seed=7), settings)
    assert stylist.cache.misses == misses  # the first painting in the style: all hits
    # Other paintings come and go through a cache of one unpinned entry...
    for seed in (20, 21, 22):
        stylist.paint(make_photo(128, 96), make_painting(seed=seed), settings)
    # ...and the library painting is still a repeat, also for a photo of another shape.
    misses = stylist.cache.misses
    stylist.paint(make_photo(96, 128), make_painting(seed=7), settings)
    assert stylist.cache.misses == misses


def test_unpinning_by_path_lets_the_entries_go_even_when_the_file_is_gone(
    stylist: Stylist, tmp_path: Path
) -> None:
    first = saved(tmp_path, "a.png", seed=7)
    same_pixels = saved(tmp_path, "b.png", seed=7)  # another server saved the same painting
    digest = painting_digest(make_painting(seed=7))
    pins = PinnedStyles(stylist, CONFIG)
    for path in (first, same_pixels, first):  # pinning a path again does nothing
        pins.pin(protocol.PinStyle(path))
    assert pins.paths == [first, same_pixels]
    Path(first).unlink()
    pins.unpin(first)
    assert stylist.cache.is_pinned(digest)  # still pinned through the other path
    pins.unpin(same_pixels)
    assert not stylist.cache.is_pinned(digest)
    assert not pins.warming  # nothing left to warm for paintings no longer pinned


def test_pins_past_the_limit_and_unreadable_paintings_are_skipped(
    stylist: Stylist, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pins = PinnedStyles(stylist, CONFIG, limit=1)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    pins.pin(protocol.PinStyle(str(broken)))  # unreadable: skipped, takes no place
    pins.pin(protocol.PinStyle(saved(tmp_path, "a.png", seed=7)))
    over = saved(tmp_path, "b.png", seed=8)
    pins.pin(protocol.PinStyle(over))
    assert len(pins.paths) == 1
    assert stylist.cache.pinned == {painting_digest(make_painting(seed=7))}
    assert f"style {over} not pinned: 1 paintings are pinned already" in caplog.text
    assert "not an image I can read" in caplog.text


def test_a_painting_removed_before_its_warm_up_stays_pinned_unwarmed(
    stylist: Stylist, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = saved(tmp_path, "a.png", seed=7)
    pins = PinnedStyles(stylist, CONFIG)
    pins.pin(protocol.PinStyle(path, quality="draft"))
    Path(path).unlink()
    pins.warm_next()
    assert len(stylist.cache) == 0 and stylist.cache.pinned
    assert "not warmed" in caplog.text
