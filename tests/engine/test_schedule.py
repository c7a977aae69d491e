"""The quality presets and the one coarse-to-fine plan (the bot's ETAs and the engine use it)."""

from __future__ import annotations

import pytest

from engine import schedule
from engine.paint_settings import CONTENT_LAYER, STYLE_LAYERS
from engine.schedule import Preset, Scale
from engine.vgg import min_input_side


def test_a_plan_doubles_up_to_the_presets_size() -> None:
    preset = schedule.PRESETS[("standard", "cpu")]
    plan = schedule.plan(1024, 768, preset)
    assert [(x.width, x.height) for x in plan] == [(128, 96), (256, 192), (512, 384)]
    assert [x.steps for x in plan] == list(preset.steps)
    assert schedule.total_steps(plan) == sum(preset.steps)
    assert schedule.total_work(plan) == sum(x.width * x.height * x.steps for x in plan)


def test_a_small_photo_is_painted_at_its_own_size_in_one_scale() -> None:
    # Scales under 64 px give their steps onward; nothing is upscaled beyond the photo.
    preset = schedule.PRESETS[("standard", "cpu")]
    assert schedule.plan(100, 80, preset) == (Scale(100, 80, sum(preset.steps)),)
    # ... but at least 64 px on the long side.
    assert schedule.plan(30, 20, preset) == (Scale(64, 43, sum(preset.steps)),)


def test_plan_drops_or_enlarges_scales_too_narrow_for_vgg() -> None:
    preset = Preset(long_side=128, steps=(4, 5))
    # 6:1, the widest images.py accepts: at 64 px the short side (11) is under 16.
    assert schedule.plan(600, 100, preset) == (Scale(128, 21, 9),)
    # A narrower minimum keeps that scale.
    assert schedule.plan(600, 100, preset, min_side=8) == (Scale(64, 11, 4), Scale(128, 21, 5))
    # A final scale that is too narrow is enlarged to the minimum, keeping its shape.
    assert schedule.plan(600, 100, Preset(long_side=64, steps=(4,))) == (Scale(94, 16, 4),)


def test_steps_must_be_positive() -> None:
    for steps in ((), (3, 0)):
        with pytest.raises(ValueError, match="steps must be positive"):
            schedule.plan(64, 64, Preset(long_side=64, steps=steps))


def test_the_default_short_side_is_what_the_default_layers_need() -> None:
    assert min_input_side((CONTENT_LAYER, *STYLE_LAYERS)) == schedule.MIN_SHORT_SIDE


def test_every_quality_has_a_preset_on_every_kind_of_device() -> None:
    assert set(schedule.PRESETS) == {
        (q, k) for q in schedule.QUALITIES for k in schedule.DEVICE_KINDS
    }
    assert schedule.DEFAULT_QUALITY in schedule.QUALITIES


def test_size_buckets_round_up_and_halve_towards_the_coarse_scales() -> None:
    assert schedule.bucket_side(1024, 64) == 1024
    assert schedule.bucket_side(683, 64) == 704
    assert [schedule.bucket_quantum(i, 4) for i in range(4)] == [8, 16, 32, 64]
    assert schedule.bucket_quantum(0, 6) == schedule.MIN_BUCKET_QUANTUM


def test_jobs_of_one_quality_and_orientation_share_a_batch_key() -> None:
    preset = schedule.PRESETS[("standard", "gpu")]
    key = schedule.batch_key(4000, 3000, preset)  # 1024 x 768 at the finest scale
    assert schedule.batch_key(1024, 760, preset) == key  # a little narrower: same buckets
    assert schedule.batch_key(3000, 4000, preset) != key  # portrait
    assert schedule.batch_key(1024, 512, preset) != key  # 2:1, a bucket of its own
    assert schedule.batch_key(4000, 3000, schedule.PRESETS[("draft", "gpu")]) != key
    # Each scale: its steps and its bucket (width, height).
    assert key[-1] == (preset.steps[-1], 1024, 768)
