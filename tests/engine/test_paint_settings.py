"""PaintSettings: the engine's defaults, built from a member's options and checked."""

from __future__ import annotations

import itertools

import pytest

from engine import protocol, schedule
from engine.paint_settings import BRUSH_SCALES, PaintSettings, style_weight_for


def test_settings_from_options_follow_the_presets() -> None:
    for quality, kind in itertools.product(schedule.QUALITIES, schedule.DEVICE_KINDS):
        s = PaintSettings.from_options(protocol.PaintOptions(quality=quality), kind)
        preset = schedule.PRESETS[(quality, kind)]
        assert (s.long_side, s.steps, s.device_kind) == (preset.long_side, preset.steps, kind)
        assert (s.optimizer, s.init) == (preset.optimizer, preset.init)
        assert s.preset == preset
    # The CPU draft is one scale of Adam from the recoloured photo (see schedule.PRESETS).
    draft = PaintSettings.from_options(protocol.PaintOptions(quality="draft"), "cpu")
    assert (draft.optimizer, draft.init, len(draft.steps)) == ("adam", "colour", 1)
    assert (draft.adam_lr, draft.adam_betas) == (0.03, (0.8, 0.99))
    s = PaintSettings.from_options(
        protocol.PaintOptions(strength=7, brush="large", keep_colors=True, seed=3),
        "cpu",
        long_side=128,
    )
    assert (s.long_side, s.brush_scale, s.keep_colors, s.seed) == (128, 1.5, True, 3)
    assert s.style_weight == style_weight_for(7)


def test_the_defaults_are_a_members_defaults_on_a_cpu() -> None:
    # One set of defaults: a bare PaintSettings is what default options give on a CPU.
    assert PaintSettings() == PaintSettings.from_options(protocol.PaintOptions(), "cpu")
    assert set(BRUSH_SCALES) == set(protocol.BRUSHES)


def test_strength_is_a_log_scale() -> None:
    weights = [style_weight_for(s) for s in range(1, 11)]
    ratios = {round(b / a, 6) for a, b in itertools.pairwise(weights)}
    assert ratios == {2.0}
    with pytest.raises(protocol.OptionError, match="out of range"):
        style_weight_for(11)


def test_settings_reject_what_the_engine_will_not_run() -> None:
    with pytest.raises(protocol.OptionError, match="size"):
        PaintSettings(long_side=10_000)
    with pytest.raises(protocol.OptionError, match="steps"):
        PaintSettings(steps=(5000,))
    with pytest.raises(protocol.OptionError, match="optimizer"):
        PaintSettings().replace(optimizer="sgd")
    with pytest.raises(protocol.OptionError, match="brush"):
        PaintSettings().replace(brush="huge")
