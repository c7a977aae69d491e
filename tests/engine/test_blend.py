"""Blending two paintings: the style target is the weighted mix of their Gram matrices."""

from __future__ import annotations

import time

import pytest
import torch
from PIL import Image
from torch import Tensor

from engine import protocol, schedule, targets
from engine.colour import to_tensor
from engine.easel import Commission, Easel
from engine.losses import gram_matrix
from engine.paint_settings import PaintSettings
from engine.style_cache import StyleCache
from engine.stylize import Stylist
from engine.vgg import VGGFeatures

from ..conftest import make_painting, make_photo
from .test_losses import naive_gram

FAST = PaintSettings(long_side=64, steps=(3, 3), tv_weight=0.0, preview_every=0.0, seed=0)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def stylist(vgg_state: dict[str, Tensor]) -> Stylist:
    return Stylist(weights=vgg_state, device="cpu")


def naive_blend(
    first: list[list[list[float]]], second: list[list[list[float]]], weight: float
) -> list[list[list[float]]]:
    return [
        [
            [(1 - weight) * a + weight * b for a, b in zip(row_a, row_b, strict=True)]
            for row_a, row_b in zip(mat_a, mat_b, strict=True)
        ]
        for mat_a, mat_b in zip(first, second, strict=True)
    ]


def flat(nested: list[list[list[float]]]) -> list[float]:
    return [x for matrix in nested for row in matrix for x in row]


# ----------------------------------------------------------------------------------------------
# The mix itself, against loops


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.5, 1.0])
def test_the_blended_target_is_the_weighted_mix_of_the_two_gram_matrices(weight: float) -> None:
    gen = torch.Generator().manual_seed(3)
    features = {
        "relu1_1": (torch.randn(1, 3, 4, 5, generator=gen), torch.randn(1, 3, 6, 2, generator=gen)),
        "relu2_1": (torch.randn(1, 2, 3, 3, generator=gen), torch.randn(1, 2, 5, 4, generator=gen)),
    }
    first = {layer: gram_matrix(a) for layer, (a, _) in features.items()}
    second = {layer: gram_matrix(b) for layer, (_, b) in features.items()}
    blended = targets.blend_grams(first, second, weight)
    assert set(blended) == set(features)
    for layer, (a, b) in features.items():
        expected = naive_blend(naive_gram(a), naive_gram(b), weight)
        assert flat(blended[layer].tolist()) == pytest.approx(flat(expected), abs=1e-6)


# ----------------------------------------------------------------------------------------------
# In the engine: the target a blended job is painted towards, and the cache


def easel_for(commission: Commission) -> Easel:
    settings = commission.settings
    plan = schedule.plan(*commission.photo.size, settings.preset, min_side=16)
    return Easel(commission, plan, CPU, time.perf_counter)


def test_a_blended_job_is_painted_towards_the_mix_and_caches_each_painting(
    vgg_state: dict[str, Tensor],
) -> None:
    net = VGGFeatures(vgg_state, layers=(FAST.content_layer, *FAST.style_layers))
    first, second = make_painting(), make_painting(80, 48, seed=9)
    cache = StyleCache()
    blended = easel_for(Commission(make_photo(), first, FAST.replace(blend=30), painting2=second))
    scale = blended.plan[-1]
    target = targets.style_grams(net, blended, scale, cache, CPU, False)
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 2)  # each painting analysed once

    # Each painting alone, through its own (fresh) cache: the blend is 70 % + 30 % of them.
    alone = {}
    for name, painting in (("first", first), ("second", second)):
        easel = easel_for(Commission(make_photo(), painting, FAST))
        alone[name] = targets.style_grams(net, easel, scale, StyleCache(), CPU, False)
    for layer in FAST.style_layers:
        expected = naive_blend(alone["first"][layer].tolist(), alone["second"][layer].tolist(), 0.3)
        assert flat(target[layer].tolist()) == pytest.approx(flat(expected), rel=1e-5, abs=1e-9)

    # A later job with either painting alone, or the two blended otherwise, is a cache hit.
    for painting in (first, second.copy()):
        easel = easel_for(Commission(make_photo(64, 40), painting, FAST.replace(strength=8)))
        targets.style_grams(net, easel, scale, cache, CPU, False)
    other_mix = easel_for(Commission(make_photo(), second, FAST.replace(blend=90), painting2=first))
    targets.style_grams(net, other_mix, scale, cache, CPU, False)
    assert (cache.hits, cache.misses, len(cache)) == (4, 2, 2)


def test_a_painting_weighted_zero_is_not_analysed(vgg_state: dict[str, Tensor]) -> None:
    net = VGGFeatures(vgg_state, layers=(FAST.content_layer, *FAST.style_layers))
    first, second = make_painting(), make_painting(seed=9)
    for blend, used, unused in ((0, first, second), (100, second, first)):
        cache = StyleCache()
        easel = easel_for(
            Commission(make_photo(), first, FAST.replace(blend=blend), painting2=second)
        )
        scale = easel.plan[-1]
        targets.style_grams(net, easel, scale, cache, CPU, False)
        assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
        for painting, hits in ((used, 1), (unused, 1)):
            alone = easel_for(Commission(make_photo(), painting, FAST))
            targets.style_grams(net, alone, scale, cache, CPU, False)
            assert cache.hits == hits  # the used painting is cached; the other was not


@pytest.mark.parametrize("init", ["photo", "colour"])
def test_blend_0_and_100_paint_as_either_painting_alone(stylist: Stylist, init: str) -> None:
    photo, first, second = make_photo(), make_painting(), make_painting(80, 48, seed=9)
    settings = FAST.replace(init=init)
    alone_first = stylist.paint(photo, first, settings)
    alone_second = stylist.paint(photo, second, settings)
    outcomes = [
        stylist.paint_batch(
            [Commission(photo, first, settings.replace(blend=b), painting2=second)]
        )[0]
        for b in (0, 100)
    ]
    assert isinstance(outcomes[0], Image.Image) and isinstance(outcomes[1], Image.Image)
    assert outcomes[0].tobytes() == alone_first.tobytes()
    assert outcomes[1].tobytes() == alone_second.tobytes()
    assert alone_first.tobytes() != alone_second.tobytes()


def test_a_blend_lies_between_its_two_paintings(
    stylist: Stylist, vgg_state: dict[str, Tensor]
) -> None:
    # Painted towards the mix, the canvas's own Gram matrices move from the first painting's
    # towards the second's as the blend grows.
    photo, first, second = make_photo(), make_painting(), make_painting(80, 48, seed=9)
    settings = FAST.replace(steps=(10,), style_weight=3e7)
    net = VGGFeatures(vgg_state, layers=(FAST.content_layer, *FAST.style_layers))
    scale = easel_for(Commission(photo, first, settings)).plan[-1]
    wanted = {
        name: targets.style_grams(
            net, easel_for(Commission(photo, painting, settings)), scale, StyleCache(), CPU, False
        )
        for name, painting in (("first", first), ("second", second))
    }
    leaning = []
    for blend in (0, 50, 100):
        commission = Commission(photo, first, settings.replace(blend=blend), painting2=second)
        (painted,) = stylist.paint_batch([commission])
        assert isinstance(painted, Image.Image)
        with torch.inference_mode():
            feats = net(to_tensor(painted, CPU))
        own = {layer: gram_matrix(feats[layer]) for layer in settings.style_layers}
        leaning.append(distance(own, wanted["first"]) - distance(own, wanted["second"]))
    assert leaning[0] < leaning[1] < leaning[2]


def distance(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return sum(float((a[k] - b[k]).pow(2).mean()) for k in a)


# ----------------------------------------------------------------------------------------------
# The option


@pytest.mark.parametrize(
    ("blend", "message"),
    [
        (-1, "blend -1 is out of range: use 0 to 100"),
        (101, "blend 101 is out of range: use 0 to 100"),
        (True, "blend must be a whole number from 0 to 100"),
        ("30", "blend must be a whole number from 0 to 100"),
        (30.5, "blend must be a whole number from 0 to 100"),
    ],
)
def test_a_blend_outside_0_to_100_is_refused_with_what_is_accepted(
    blend: object, message: str
) -> None:
    with pytest.raises(protocol.OptionError, match=message):
        protocol.PaintOptions(blend=blend).validate()  # type: ignore[arg-type]


def test_the_blend_option_reaches_the_settings() -> None:
    options = protocol.PaintOptions(blend=30)
    assert PaintSettings.from_options(options, "gpu").blend == 30
    assert PaintSettings().blend == protocol.DEFAULT_BLEND == 50
    with pytest.raises(protocol.OptionError, match="blend"):
        PaintSettings(blend=101)
